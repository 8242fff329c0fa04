//! The image build is reproducible: every base image in kt-shadow's Dockerfile is pinned
//! by digest (a tag can be moved to other content; a digest cannot).

/// The image references of the `FROM` lines (`scratch` is no image and needs no pin).
fn base_images(dockerfile: &str) -> Vec<&str> {
    dockerfile
        .lines()
        .map(str::trim)
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            first
                .eq_ignore_ascii_case("FROM")
                .then(|| words.find(|w| !w.starts_with("--")))
                .flatten()
        })
        .filter(|image| *image != "scratch")
        .collect()
}

/// Whether `image` names its content by a sha256 digest.
fn pinned(image: &str) -> bool {
    image.split_once("@sha256:").is_some_and(|(_, hex)| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[test]
fn every_base_image_is_pinned_by_digest() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile");
    let text = std::fs::read_to_string(path).expect("kt-shadow/Dockerfile");
    let images = base_images(&text);
    assert!(!images.is_empty(), "no FROM line found in {path}");
    for image in images {
        assert!(
            pinned(image),
            "{path}: base image {image} is not pinned by digest (@sha256:...)"
        );
    }
}

#[test]
fn the_check_tells_pinned_from_unpinned() {
    let text = "FROM rust:1.97 AS build\nRUN true\nfrom --platform=$BUILDPLATFORM debian@sha256:\
                0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\nFROM scratch\n";
    let images = base_images(text);
    assert_eq!(images.len(), 2);
    assert!(!pinned(images[0]));
    assert!(pinned(images[1]));
    assert!(!pinned("rust@sha256:abc"));
}
