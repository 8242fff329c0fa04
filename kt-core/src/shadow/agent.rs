//! The imageless shadow's agent: the static kt-shadow binary and its loader, shipped to
//! the namespace through the API server in immutable ConfigMaps named by content hash
//! ([`kt_proto::agent`] is the contract), uploaded once and reused by later sessions.
//!
//! Where kt-shadow comes from, first found wins: the agent directory option, then
//! `KT_AGENT_DIR`, then the copy embedded at build time (`KT_AGENT_EMBED`, see
//! `build.rs`). The loader is always in kt-core ([`kt_loader::BINARY`], built with it);
//! an agent directory may hold its own `kt-loader` to replace it (a loader built for
//! another architecture, say). Both must be static Linux executables (no ELF
//! interpreter): they run on whatever image the pod borrows, which may hold nothing else.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kt_proto::agent::{PART_KEY, PART_OF, PART_PREFIX, PART_ROLE, PART_SIZE, part_name};
use kt_proto::{annotations, labels};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use sha2::{Digest, Sha256};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::events::{Event, EventBus};

use crate::options::AGENT_DIR_ENV;

/// The agent's two files, as named in an agent directory.
const SHADOW_FILE: &str = "kt-shadow";
const LOADER_FILE: &str = "kt-loader";

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/agent.rs"));
}

/// One shipped file: its bytes and their SHA-256, hex.
#[derive(Clone)]
struct Blob {
    bytes: Cow<'static, [u8]>,
    sha256: String,
}

impl Blob {
    fn new(bytes: Cow<'static, [u8]>) -> Blob {
        let sha256 = hex(&Sha256::digest(&bytes));
        Blob { bytes, sha256 }
    }
}

/// The agent to ship: kt-shadow, its loader, and the node architecture they run on.
#[derive(Clone)]
pub(crate) struct Agent {
    shadow: Blob,
    loader: Blob,
    /// The `kubernetes.io/arch` value of nodes that can run it (`amd64`, `arm64`).
    pub(crate) arch: &'static str,
    /// Where it came from (a directory, or `embedded`), for messages.
    pub(crate) from: String,
    /// kt-shadow's parts: their ConfigMaps' names (from their SHA-256) and byte
    /// ranges, hashed once here (a connect uses them more than once, and hashing
    /// megabytes is slow in an unoptimised build).
    chunks: Vec<(String, Range<usize>)>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("shadow", &self.shadow.sha256)
            .field("loader", &self.loader.sha256)
            .field("arch", &self.arch)
            .field("from", &self.from)
            .finish()
    }
}

impl Agent {
    /// The agent in `dir` (the option), else in `$KT_AGENT_DIR`, else the embedded one.
    pub(crate) fn locate(dir: Option<&Path>) -> Result<Arc<Agent>> {
        let env = std::env::var_os(AGENT_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if let Some(dir) = dir.map(Path::to_path_buf).or(env) {
            return Agent::from_dir(&dir).map(Arc::new);
        }
        static EMBEDDED: OnceLock<std::result::Result<Arc<Agent>, String>> = OnceLock::new();
        let embedded = EMBEDDED.get_or_init(|| match embedded::SHADOW {
            Some(shadow) => Agent::new(
                Cow::Borrowed(shadow),
                Cow::Borrowed(kt_loader::BINARY),
                format!("the agent embedded at build time from {}", embedded::FROM),
            )
            .map(Arc::new)
            .map_err(|e| e.to_string()),
            None => Err(String::new()),
        });
        match embedded {
            Ok(agent) => Ok(Arc::clone(agent)),
            Err(e) if e.is_empty() => Err(Error::AgentMissing {
                tried: format!(
                    "no agent directory option, {AGENT_DIR_ENV} is not set, and this kt was \
                     built without KT_AGENT_EMBED"
                ),
            }),
            Err(e) => Err(Error::AgentInvalid {
                path: "the embedded agent".to_owned(),
                reason: e.clone(),
            }),
        }
    }

    /// The agent in `dir`: its `kt-shadow`, and its `kt-loader` if it has one, else
    /// kt-core's own.
    fn from_dir(dir: &Path) -> Result<Agent> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(|e| Error::AgentInvalid {
                path: path.display().to_string(),
                reason: format!(
                    "{e}; the agent directory needs `{SHADOW_FILE}` (kt-shadow/build-static \
                     makes it)"
                ),
            })
        };
        let shadow = read(SHADOW_FILE)?;
        let loader = match dir.join(LOADER_FILE).try_exists() {
            Ok(true) => Cow::Owned(read(LOADER_FILE)?),
            _ => Cow::Borrowed(kt_loader::BINARY),
        };
        Agent::new(Cow::Owned(shadow), loader, dir.display().to_string())
    }

    fn new(shadow: Cow<'static, [u8]>, loader: Cow<'static, [u8]>, from: String) -> Result<Agent> {
        let invalid = |file: &str, reason: String| Error::AgentInvalid {
            path: format!("{from}: {file}"),
            reason,
        };
        let arch = elf_arch(&shadow).map_err(|r| invalid(SHADOW_FILE, r))?;
        let loader_arch = elf_arch(&loader).map_err(|r| invalid(LOADER_FILE, r))?;
        if loader_arch != arch {
            return Err(invalid(
                LOADER_FILE,
                format!("it is built for {loader_arch}, kt-shadow for {arch}; build both alike"),
            ));
        }
        if loader.len() > PART_SIZE {
            return Err(invalid(
                LOADER_FILE,
                format!(
                    "it has {} bytes, more than one part ({PART_SIZE}); build it with \
                     kt-shadow/build-static",
                    loader.len()
                ),
            ));
        }
        let chunks = (chunks(shadow.len()).into_iter())
            .map(|range| {
                (
                    part_name(&hex(&Sha256::digest(&shadow[range.clone()]))),
                    range,
                )
            })
            .collect();
        Ok(Agent {
            shadow: Blob::new(shadow),
            loader: Blob::new(loader),
            arch,
            from,
            chunks,
        })
    }

    /// kt-shadow's size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.shadow.bytes.len()
    }

    /// kt-shadow's SHA-256, hex.
    pub(crate) fn sha256(&self) -> &str {
        &self.shadow.sha256
    }

    /// The parts this agent is shipped in: the loader first, then kt-shadow's, in order.
    fn parts(&self) -> Vec<Part<'_>> {
        let loader = Part {
            name: part_name(&self.loader.sha256),
            of: LOADER_FILE,
            bytes: &self.loader.bytes,
        };
        let shadow = self.chunks.iter().map(|(name, range)| Part {
            name: name.clone(),
            of: SHADOW_FILE,
            bytes: &self.shadow.bytes[range.clone()],
        });
        std::iter::once(loader).chain(shadow).collect()
    }
}

/// One ConfigMap's worth of the agent.
struct Part<'a> {
    name: String,
    of: &'static str,
    bytes: &'a [u8],
}

/// The agent as shipped to one namespace: the ConfigMaps a pod mounts.
#[derive(Debug, Clone)]
pub(crate) struct Shipped {
    /// The loader's ConfigMap.
    pub(crate) loader: String,
    /// kt-shadow's parts' ConfigMaps, in order.
    pub(crate) parts: Vec<String>,
    /// kt-shadow's SHA-256, hex: the loader checks the assembled binary against it.
    pub(crate) sha256: String,
    /// kt-shadow's size in bytes.
    pub(crate) size: usize,
    /// The node architecture it runs on (`kubernetes.io/arch`).
    pub(crate) arch: &'static str,
    /// What was shipped.
    agent: Arc<Agent>,
}

/// The byte ranges of a file of `len` bytes cut into parts of [`PART_SIZE`].
fn chunks(len: usize) -> Vec<Range<usize>> {
    (0..len.div_ceil(PART_SIZE))
        .map(|i| i * PART_SIZE..len.min((i + 1) * PART_SIZE))
        .collect()
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The label selector of every part of every agent.
pub(crate) fn part_selector() -> String {
    format!(
        "{}={},{}={PART_ROLE}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE,
        labels::ROLE
    )
}

/// Makes sure the namespace has every part of `agent`: uploads the missing ones (an
/// [`Event::Uploading`] says how much) and checks the loader that is there byte for
/// byte (the loader checks the rest in the pod, before it runs anything).
pub(crate) async fn ship(
    cluster: &Cluster,
    agent: &Arc<Agent>,
    events: &EventBus,
) -> Result<Shipped> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let present = present_parts(cluster, &api).await?;
    let parts = agent.parts();
    let missing: Vec<&Part<'_>> = parts
        .iter()
        .filter(|p| !present.contains(&p.name))
        .collect();
    if !missing.is_empty() {
        events.emit(Event::Uploading {
            namespace: cluster.namespace.clone(),
            parts: u32::try_from(missing.len()).unwrap_or(u32::MAX),
            bytes: u32::try_from(missing.iter().map(|p| p.bytes.len()).sum::<usize>())
                .unwrap_or(u32::MAX),
        });
    }
    for part in &missing {
        create(cluster, &api, part).await?;
    }
    let loader = &parts[0];
    if present.contains(&loader.name) {
        verify_loader(cluster, &api, loader).await?;
    }
    Ok(Shipped {
        loader: loader.name.clone(),
        parts: parts[1..].iter().map(|p| p.name.clone()).collect(),
        sha256: agent.sha256().to_owned(),
        size: agent.size(),
        arch: agent.arch,
        agent: Arc::clone(agent),
    })
}

/// Uploads again any part of `shipped` that went away since [`ship`] (a `clean` that
/// ran in between): the kubelet keeps retrying a pod's missing ConfigMap.
pub(crate) async fn reship_missing(cluster: &Cluster, shipped: &Shipped) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let present = present_parts(cluster, &api).await?;
    for part in shipped.agent.parts() {
        let wanted = part.name == shipped.loader || shipped.parts.contains(&part.name);
        if wanted && !present.contains(&part.name) {
            create(cluster, &api, &part).await?;
        }
    }
    Ok(())
}

/// The parts in the namespace that no pod mounts (a pod being deleted counts as none):
/// what `clean` removes.
pub(crate) async fn unused_parts(cluster: &Cluster) -> Result<Vec<String>> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let present = present_parts(cluster, &api).await?;
    if present.is_empty() {
        return Ok(Vec::new());
    }
    let pods = cluster
        .pods()
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster.error(e, "list", "pods", "(which pods use kt's agent parts)"))?;
    let used: BTreeSet<String> = (pods.items.iter())
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .flat_map(|p| p.spec.iter().flat_map(|s| s.volumes.iter().flatten()))
        .flat_map(|v| {
            let direct = v.config_map.as_ref().map(|c| c.name.clone());
            let projected = (v.projected.iter())
                .flat_map(|p| p.sources.iter().flatten())
                .filter_map(|s| s.config_map.as_ref().map(|c| c.name.clone()));
            direct.into_iter().chain(projected)
        })
        .collect();
    Ok(present.into_iter().filter(|p| !used.contains(p)).collect())
}

/// Deletes part `name` (gone already is fine).
pub(crate) async fn delete_part(cluster: &Cluster, name: &str) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    match api.delete(name, &kube::api::DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if crate::cluster::is_not_found(&e) => Ok(()),
        Err(e) => Err(cluster.error(e, "delete", "configmaps", "(an unused part of kt's agent)")),
    }
}

async fn present_parts(cluster: &Cluster, api: &Api<ConfigMap>) -> Result<BTreeSet<String>> {
    let listed = api
        .list_metadata(&ListParams::default().labels(&part_selector()))
        .await
        .map_err(|e| cluster.error(e, "list", "configmaps", "(the shipped agent's parts)"))?;
    Ok(listed
        .items
        .into_iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .filter_map(|m| m.metadata.name)
        .collect())
}

async fn create(cluster: &Cluster, api: &Api<ConfigMap>, part: &Part<'_>) -> Result<()> {
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(part.name.clone()),
            labels: Some(BTreeMap::from([
                (
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_VALUE.to_owned(),
                ),
                (labels::ROLE.to_owned(), PART_ROLE.to_owned()),
                (PART_OF.to_owned(), part.of.to_owned()),
            ])),
            annotations: Some(BTreeMap::from([(
                annotations::VERSION.to_owned(),
                kt_proto::VERSION.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        binary_data: Some(BTreeMap::from([(
            PART_KEY.to_owned(),
            ByteString(part.bytes.to_vec()),
        )])),
        immutable: Some(true),
        ..ConfigMap::default()
    };
    match api.create(&PostParams::default(), &map).await {
        Ok(_) => Ok(()),
        // Another session uploaded it at the same moment; the name is its hash.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(cluster.error(e, "create", "configmaps", "(a part of the shipped agent)")),
    }
}

/// Reads the loader's ConfigMap back and checks it holds the loader, byte for byte.
async fn verify_loader(cluster: &Cluster, api: &Api<ConfigMap>, loader: &Part<'_>) -> Result<()> {
    let map = api
        .get(&loader.name)
        .await
        .map_err(|e| cluster.error(e, "get", "configmaps", "(the shipped agent's loader)"))?;
    let tampered = |detail: String| Error::AgentTampered {
        namespace: cluster.namespace.clone(),
        configmap: loader.name.clone(),
        detail,
    };
    let data = map
        .binary_data
        .as_ref()
        .and_then(|d| d.get(PART_KEY))
        .ok_or_else(|| tampered(format!("it has no binaryData key `{PART_KEY}`")))?;
    if data.0 != loader.bytes {
        let got = hex(&Sha256::digest(&data.0));
        let want = loader.name.trim_start_matches(PART_PREFIX);
        return Err(tampered(format!("its SHA-256 is {got}, not {want}")));
    }
    if map.immutable != Some(true) {
        return Err(tampered("it is not immutable".to_owned()));
    }
    Ok(())
}

/// The `kubernetes.io/arch` of nodes that run `elf`, or why it cannot be shipped: it
/// must be a 64-bit little-endian Linux executable with no ELF interpreter (static).
fn elf_arch(elf: &[u8]) -> std::result::Result<&'static str, String> {
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("it is not an ELF executable".to_owned());
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("it is not a 64-bit little-endian ELF executable".to_owned());
    }
    let arch = match u16_at(18) {
        Some(62) => "amd64",
        Some(183) => "arm64",
        other => {
            return Err(format!(
                "its machine type {other:?} is neither x86_64 nor aarch64"
            ));
        }
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return Err("its ELF header is cut short".to_owned());
    };
    const PT_INTERP: u32 = 3;
    for i in 0..usize::from(phnum) {
        let at = usize::try_from(phoff)
            .ok()
            .and_then(|o| o.checked_add(i * usize::from(phentsize)));
        match at.and_then(u32_at) {
            Some(PT_INTERP) => {
                return Err(
                    "it is dynamically linked (it names an ELF interpreter), so it would \
                     not start on an image without that libc; build it static with \
                     kt-shadow/build-static"
                        .to_owned(),
                );
            }
            Some(_) => {}
            None => return Err("its program headers are cut short".to_owned()),
        }
    }
    Ok(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header for `machine` with one program header of type `ptype`.
    pub(crate) fn elf(machine: u16, ptype: u32) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[18..20].copy_from_slice(&machine.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&1u16.to_le_bytes());
        e[64..68].copy_from_slice(&ptype.to_le_bytes());
        e
    }

    #[test]
    fn static_executables_ship_and_say_their_architecture() {
        assert_eq!(elf_arch(&elf(62, 1)), Ok("amd64"));
        assert_eq!(elf_arch(&elf(183, 1)), Ok("arm64"));
        // A static-pie has a DYNAMIC segment (it relocates itself) but no interpreter.
        assert_eq!(elf_arch(&elf(62, 2)), Ok("amd64"));
    }

    #[test]
    fn dynamic_foreign_or_broken_files_are_refused_with_the_reason() {
        let dynamic = elf_arch(&elf(62, 3)).unwrap_err();
        assert!(dynamic.contains("dynamically linked"), "{dynamic}");
        assert!(dynamic.contains("build-static"), "{dynamic}");
        let riscv = elf_arch(&elf(243, 1)).unwrap_err();
        assert!(riscv.contains("neither x86_64 nor aarch64"), "{riscv}");
        assert!(elf_arch(b"#!/bin/sh\n").unwrap_err().contains("not an ELF"));
        let mut short = elf(62, 1);
        short.truncate(66);
        assert!(elf_arch(&short).unwrap_err().contains("cut short"));
        let mut thirty_two = elf(62, 1);
        thirty_two[4] = 1;
        assert!(elf_arch(&thirty_two).unwrap_err().contains("64-bit"));
    }

    #[test]
    fn parts_cover_the_binary_in_order_and_are_named_by_their_hash() {
        assert_eq!(chunks(0), Vec::<Range<usize>>::new());
        assert_eq!(chunks(PART_SIZE), vec![(0..PART_SIZE)]);
        assert_eq!(
            chunks(2 * PART_SIZE + 5),
            [
                0..PART_SIZE,
                PART_SIZE..2 * PART_SIZE,
                2 * PART_SIZE..2 * PART_SIZE + 5
            ]
        );
        let mut shadow = elf(62, 1);
        shadow.resize(PART_SIZE + 100, 7);
        let agent = Agent::new(
            Cow::Owned(shadow.clone()),
            Cow::Owned(elf(62, 1)),
            "test".to_owned(),
        )
        .expect("agent");
        let parts = agent.parts();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].of, "kt-loader");
        let joined: Vec<u8> = parts[1..].iter().flat_map(|p| p.bytes.to_vec()).collect();
        assert_eq!(joined, shadow);
        for p in &parts {
            assert_eq!(p.name, part_name(&hex(&Sha256::digest(p.bytes))));
            assert!(p.bytes.len() <= PART_SIZE);
            assert_eq!(p.name.len(), PART_PREFIX.len() + 64);
        }
        assert_eq!(agent.sha256(), hex(&Sha256::digest(&shadow)));
    }

    #[test]
    fn a_loader_and_binary_of_different_architectures_are_refused() {
        let e = Agent::new(
            Cow::Owned(elf(62, 1)),
            Cow::Owned(elf(183, 1)),
            "dir".to_owned(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("kt-loader") && e.contains("arm64"), "{e}");
    }

    #[test]
    fn a_missing_agent_directory_names_the_file_and_what_to_do() {
        let e = Agent::from_dir(Path::new("/nonexistent-kt-agent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent-kt-agent/kt-shadow"), "{e}");
        assert!(e.contains("build-static"), "{e}");
    }

    #[test]
    fn a_directory_with_kt_shadow_alone_ships_the_built_in_loader_and_one_of_its_own_replaces_it() {
        let dir = std::env::temp_dir().join(format!("kt-agent-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join(SHADOW_FILE), elf(62, 1)).expect("write kt-shadow");
        let agent = Agent::from_dir(&dir).expect("kt-shadow alone is an agent");
        assert_eq!(&*agent.loader.bytes, kt_loader::BINARY);
        assert_eq!(agent.arch, "amd64");
        let mut own = elf(62, 1);
        own.push(0);
        std::fs::write(dir.join(LOADER_FILE), &own).expect("write kt-loader");
        let agent = Agent::from_dir(&dir).expect("with a loader of its own");
        assert_eq!(&*agent.loader.bytes, own.as_slice());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_built_in_loader_is_a_static_amd64_program_that_fits_in_one_part() {
        assert_eq!(elf_arch(kt_loader::BINARY), Ok("amd64"));
        assert!(kt_loader::BINARY.len() <= PART_SIZE);
    }
}
