//! `instance init`: turns a left4me instance spec (`spec.yaml`: `port`, `overlays` as
//! strings or `{path, alias}` relative to the store's `overlays/`, `arguments`, `config`
//! lines) into a game-server bundle `INSTANCES/NAME/`: a layered root of the overlays
//! (first wins) over the installation and the system layer, the per-instance upper and
//! work layers, `server.cfg` (and `server_<alias>.cfg` copies from aliased overlays)
//! staged into the upper layer owned by the service user, and a config.json at least as
//! hardened as left4me's systemd unit. Running init again rewrites config.json and the
//! staged files and keeps the upper layer (the instance's data).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, IoContext, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    pub port: u16,
    #[serde(default)]
    pub overlays: Vec<OverlayRef>,
    #[serde(default)]
    pub arguments: Arguments,
    #[serde(default)]
    pub config: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OverlayRef {
    Path(String),
    Aliased { path: String, alias: Option<String> },
}

impl OverlayRef {
    fn path(&self) -> &str {
        match self {
            OverlayRef::Path(p) | OverlayRef::Aliased { path: p, .. } => p,
        }
    }
    fn alias(&self) -> Option<&str> {
        match self {
            OverlayRef::Aliased { alias: Some(a), .. } => Some(a),
            _ => None,
        }
    }
}

/// `arguments` as a list, or one string split on whitespace.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum Arguments {
    #[default]
    None,
    List(Vec<String>),
    Line(String),
}

impl Arguments {
    fn to_vec(&self) -> Vec<String> {
        match self {
            Arguments::None => Vec::new(),
            Arguments::List(v) => v.clone(),
            Arguments::Line(s) => s.split_whitespace().map(String::from).collect(),
        }
    }
}

/// Where and as whom an instance runs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub name: String,
    pub spec: PathBuf,
    pub store: PathBuf,
    pub instances: PathBuf,
    /// The host service user (left4me: 980); the game runs as this uid and gid.
    pub uid: u32,
    /// The layer under the installation that holds the system (libraries, /bin/sh).
    pub system: Option<String>,
}

const SCRIPT_BUILT_UID: u32 = 981;

fn parse_spec(path: &Path) -> Result<InstanceSpec> {
    let text = std::fs::read_to_string(path).at(path)?;
    serde_yaml_ng::from_str(&text)
        .map_err(|e| Error::config(format!("{}", path.display()), e.to_string()))
}

fn alias_ok(alias: &str) -> bool {
    !alias.is_empty()
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The lower layers, top first: each overlay (idmapped to the service user when it is
/// owned by the script-build uid), the installation, the system layer.
fn lower(spec: &InstanceSpec, opts: &InitOptions) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (i, o) in spec.overlays.iter().enumerate() {
        let rel = format!("overlays/{}", o.path());
        if let Some(a) = o.alias().filter(|a| !alias_ok(a)) {
            return Err(Error::config(
                format!("overlays[{i}].alias"),
                format!("{a:?}: letters, digits, _ and - only"),
            ));
        }
        let mut layer = json!({ "path": rel });
        let owner = std::fs::metadata(opts.store.join(&rel))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .ok();
        if owner == Some(SCRIPT_BUILT_UID) {
            let map = json!([{"containerID": SCRIPT_BUILT_UID, "hostID": opts.uid, "size": 1}]);
            layer["uidMappings"] = map.clone();
            layer["gidMappings"] = map;
        }
        out.push(layer);
    }
    out.push(json!({"path": "installation"}));
    if let Some(system) = &opts.system {
        out.push(json!({ "path": system }));
    }
    Ok(out)
}

/// The highest RLIMIT_NOFILE this host lets the game have, up to 65536.
fn nofile_limit() -> u64 {
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(65_536);
    hard.min(65_536)
}

fn config(spec: &InstanceSpec, opts: &InitOptions) -> Result<Value> {
    let mut c = crate::spec::default_config();
    let mut args: Vec<String> = [
        "/srcds_run",
        "-game",
        "left4dead2",
        "+ip",
        "0.0.0.0",
        "+hostport",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(spec.port.to_string());
    args.extend(spec.arguments.to_vec());
    let nofile = nofile_limit();
    c["process"] = json!({
        "terminal": false,
        "user": {"uid": opts.uid, "gid": opts.uid},
        "args": args,
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/home/left4me", "LANG=C.UTF-8"],
        "cwd": "/left4dead2",
        "capabilities": {},
        "noNewPrivileges": true,
        "oomScoreAdj": -200,
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}]
    });
    c["root"] = json!({"path": "rootfs", "readonly": false});
    c["hostname"] = json!(format!("l4d2-{}", opts.name));
    c["mounts"].as_array_mut().expect("default mounts").push(
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                     "options": ["nosuid", "nodev", "mode=1777", "size=256m"]}),
    );
    let linux = &mut c["linux"];
    // Host network (the game's UDP port and A2S); everything else private.
    linux["namespaces"] = json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                                 {"type": "mount"}, {"type": "cgroup"}]);
    linux["resources"] = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "memory": {"limit": 2_147_483_648i64},
        "pids": {"limit": 256},
        "unified": {"memory.high": "1610612736"}
    });
    linux["seccomp"] = serde_json::from_str(crate::seccomp::profiles::SRCDS)
        .expect("the embedded srcds profile is JSON");
    c["annotations"] = json!({
        crate::cgroups::pinning::ANNOTATION: "auto",
        "org.left4me.instance": opts.name,
    });
    let mut allowed = vec!["installation".to_string(), "overlays".to_string()];
    allowed.extend(opts.system.iter().cloned());
    c["left4me"] = json!({"layers": {
        "store": opts.store,
        "allowedRoots": allowed,
        "lower": lower(spec, opts)?,
        "upper": "upper",
        "work": "work"
    }});
    Ok(c)
}

/// Creates `dir` (and parents under `base`) owned by `uid`.
fn mkdir_owned(base: &Path, rel: &Path, uid: u32) -> Result<()> {
    let mut dir = base.to_path_buf();
    for part in rel.components() {
        dir.push(part);
        if !dir.exists() {
            std::fs::create_dir(&dir).at(&dir)?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).at(&dir)?;
        }
    }
    Ok(())
}

fn stage(path: &Path, text: &[u8], uid: u32) -> Result<()> {
    crate::state::write_atomic(path, text, 0o644)?;
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).at(path)
}

/// `instance init`: writes the bundle; returns its directory.
pub fn init(opts: &InitOptions) -> Result<PathBuf> {
    crate::state::validate_id(&opts.name)?;
    let spec = parse_spec(&opts.spec)?;
    let store = std::fs::canonicalize(&opts.store).at(&opts.store)?;
    let opts = InitOptions {
        store,
        ..opts.clone()
    };
    let dir = opts.instances.join(&opts.name);
    let doc = config(&spec, &opts)?;
    std::fs::create_dir_all(dir.join("rootfs")).at(&dir)?;
    // Checked as `create` will check it (layer references against the store) before
    // anything is written into the instance.
    let problems = crate::edit::problems(&doc, Some(&dir));
    if !problems.is_empty() {
        return Err(Error::Usage(format!(
            "instance {}: {}",
            opts.name,
            problems.join("; ")
        )));
    }
    let cfg_dir = Path::new("left4dead2/cfg");
    mkdir_owned(&dir, Path::new("upper"), opts.uid)?;
    mkdir_owned(&dir.join("upper"), cfg_dir, opts.uid)?;
    let upper_cfg = dir.join("upper").join(cfg_dir);
    let mut server_cfg = spec.config.join("\n");
    server_cfg.push('\n');
    stage(
        &upper_cfg.join("server.cfg"),
        server_cfg.as_bytes(),
        opts.uid,
    )?;
    for o in &spec.overlays {
        let Some(alias) = o.alias() else { continue };
        let src = opts
            .store
            .join("overlays")
            .join(o.path())
            .join("left4dead2/cfg/server.cfg");
        if let Ok(text) = std::fs::read(&src) {
            stage(
                &upper_cfg.join(format!("server_{alias}.cfg")),
                &text,
                opts.uid,
            )?;
        }
    }
    let text = serde_json::to_vec_pretty(&doc).expect("JSON");
    crate::state::write_atomic(&dir.join(crate::spec::CONFIG_FILE), &text, 0o644)?;
    Ok(dir)
}
