use super::overlay::{build, Owner};
use super::*;
use serde_json::json;
use std::os::unix::fs::MetadataExt;

#[test]
fn references_are_checked_for_syntax() {
    assert!(check_reference("overlays/a").is_ok());
    assert!(check_reference("installation").is_ok());
    for (bad, why) in [
        ("/abs", "absolute"),
        ("a/../b", ".."),
        ("..", ".."),
        ("a//b", "empty"),
        ("./a", "'.'"),
        ("", "empty"),
    ] {
        let err = check_reference(bad).unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn config_extension_parses_with_defaults_and_names_bad_fields() {
    let config = json!({"left4me": {"layers": {
        "store": "/var/lib/left4me",
        "lower": [{"path": "overlays/a"}, {"path": "installation",
            "uidMappings": [{"containerID": 981, "hostID": 980, "size": 1}],
            "gidMappings": [{"containerID": 981, "hostID": 980, "size": 1}]}]
    }}});
    let layers = LayersConfig::from_config(&config).unwrap().unwrap();
    assert_eq!(layers.upper, PathBuf::from("upper"));
    assert_eq!(layers.allowed_roots.len(), 4);
    assert_eq!(layers.lower[1].uid_mappings.as_ref().unwrap()[0].to, 980);
    assert!(LayersConfig::from_config(&json!({})).unwrap().is_none());
    let bad = json!({"left4me": {"layers": {"store": "/s", "lower": [{"path": 3}]}}});
    let err = LayersConfig::from_config(&bad).unwrap_err().to_string();
    assert!(err.contains("left4me.layers.lower[0].path"), "{err}");
    let typo = json!({"left4me": {"layers": {"store": "/s", "lower": [], "uper": "x"}}});
    assert!(LayersConfig::from_config(&typo).is_err());
}

/// A scratch layer store: installation/, overlays/{a,b}, and an outside directory.
struct Store {
    base: PathBuf,
}

impl Store {
    fn new(tag: &str) -> Store {
        let base = std::env::temp_dir().join(format!("l4m-layers-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        for d in [
            "store/installation",
            "store/overlays/a",
            "store/overlays/b",
            "outside",
        ] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        Store { base }
    }
    fn store(&self) -> PathBuf {
        self.base.join("store")
    }
    fn config(&self, lower: &[&str]) -> LayersConfig {
        LayersConfig {
            store: self.store(),
            allowed_roots: default_allowed_roots(),
            lower: lower
                .iter()
                .map(|p| LayerRef {
                    path: p.to_string(),
                    uid_mappings: None,
                    gid_mappings: None,
                    idmap_to_container: false,
                })
                .collect(),
            upper: self.base.join("upper"),
            work: self.base.join("work"),
            readonly: false,
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn resolve_err(store: &Store, lower: &[&str]) -> String {
    resolve(&store.config(lower), &store.base)
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn every_invalid_reference_class_has_its_own_error() {
    let s = Store::new("invalid");
    let st = s.store();
    std::os::unix::fs::symlink(s.base.join("outside"), st.join("overlays/escape")).unwrap();
    std::os::unix::fs::symlink("/", st.join("overlays/root")).unwrap();
    std::os::unix::fs::symlink("../installation", st.join("overlays/inside")).unwrap();
    std::fs::write(st.join("overlays/file"), "").unwrap();
    assert!(resolve(&s.config(&["overlays/inside", "installation"]), &s.base).is_ok());
    let cases = [
        ("overlays/missing", "does not exist"),
        ("overlays/file", "not a directory"),
        ("overlays/escape", "outside the allowed roots"),
        ("overlays/root", "outside the allowed roots"),
        ("/etc", "absolute"),
        ("overlays/../installation", ".."),
        ("overlays//a", "empty path component"),
    ];
    for (reference, why) in cases {
        let err = resolve_err(&s, &[reference, "installation"]);
        assert!(err.contains(why), "{reference}: {err}");
        assert!(
            err.contains("left4me.layers.lower[0]"),
            "{reference}: {err}"
        );
    }
    // A store directory that is not an allowed root.
    std::fs::create_dir_all(st.join("elsewhere")).unwrap();
    assert!(resolve_err(&s, &["elsewhere"]).contains("outside the allowed roots"));
}

#[test]
fn more_than_500_layers_are_refused_before_anything_is_opened() {
    let s = Store::new("many");
    let refs: Vec<String> = (0..=MAX_LAYERS).map(|i| format!("overlays/{i}")).collect();
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let err = resolve_err(&s, &refs);
    assert!(err.contains("501 layers"), "{err}");
}

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root");
    }
    root
}

#[test]
fn the_detached_overlay_merges_with_first_layer_on_top() {
    if !is_root() {
        return;
    }
    let s = Store::new("merge");
    let st = s.store();
    for (layer, content) in [
        ("overlays/a", "a"),
        ("overlays/b", "b"),
        ("installation", "i"),
    ] {
        std::fs::write(st.join(layer).join("same"), content).unwrap();
        std::fs::write(st.join(layer).join(format!("only-{content}")), "").unwrap();
    }
    let stack = resolve(
        &s.config(&["overlays/a", "overlays/b", "installation"]),
        &s.base,
    )
    .unwrap();
    let merged = build(&stack, Owner { uid: 980, gid: 980 }).unwrap();
    let view = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&merged)
    ));
    assert_eq!(std::fs::read_to_string(view.join("same")).unwrap(), "a");
    for f in ["only-a", "only-b", "only-i"] {
        assert!(view.join(f).exists(), "{f} missing from the merged view");
    }
    std::fs::write(view.join("new"), "x").unwrap();
    assert!(
        s.base.join("upper/new").exists(),
        "writes go to the upper layer"
    );
    assert!(!st.join("overlays/a/new").exists());
    let meta = std::fs::metadata(s.base.join("upper")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (980, 980),
        "upper created with the owner"
    );
}
