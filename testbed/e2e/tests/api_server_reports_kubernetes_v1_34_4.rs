//! The API server says it is Kubernetes v1.34.4, as a released kube-apiserver
//! does: clients (kubectl's version-skew check, kube-rs `apiserver_version`, kt's
//! own feature checks) read `gitVersion`, not just major/minor.

use anyhow::{Context as _, Result, ensure};
use kt_lab_tests::Lab;

const WANT: &str = "v1.34.4";

#[tokio::test]
async fn api_server_reports_git_version_v1_34_4() -> Result<()> {
    let lab = Lab::connect().await?;

    let info = lab.client().apiserver_version().await?;
    ensure!(
        info.major == "1" && info.minor == "34",
        "the API server reports version {}.{}, expected 1.34",
        info.major,
        info.minor
    );
    ensure!(
        info.git_version == WANT,
        "the API server reports gitVersion `{}` (gitCommit `{}`, buildDate `{}`), expected `{WANT}`: \
         kube-apiserver was built without the version ldflags (-X k8s.io/component-base/version.gitVersion=...)",
        info.git_version,
        info.git_commit,
        info.build_date
    );

    let out = lab.kubectl(&["version", "-o", "json"]).await?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("`kubectl version -o json` is not JSON: {out}"))?;
    for side in ["clientVersion", "serverVersion"] {
        let got = v[side]["gitVersion"].as_str().unwrap_or_default();
        ensure!(
            got == WANT,
            "`kubectl version` {side}.gitVersion is `{got}`, expected `{WANT}`"
        );
    }
    Ok(())
}
