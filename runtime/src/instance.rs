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

use std::os::fd::OwnedFd;

use crate::error::{Error, IoContext, Result};
use crate::sys::SysError;

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

/// The staging directory `rel` under `base`, each component created (owned by `uid`)
/// when missing and opened without following symlinks: the upper layer belongs to the
/// service user, who must not be able to point root's writes anywhere else.
fn open_dir_chain(base: &Path, rel: &Path, uid: u32) -> Result<OwnedFd> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let mut dir = openat(nix::fcntl::AT_FDCWD, base, flags, Mode::empty())
        .map_err(|e| SysError::new("open", base.display(), e))?;
    let mut path = base.to_path_buf();
    for part in rel.components() {
        path.push(part);
        let created = match mkdirat(&dir, part.as_os_str(), Mode::from_bits_truncate(0o755)) {
            Ok(()) => true,
            Err(nix::errno::Errno::EEXIST) => false,
            Err(e) => return Err(SysError::new("mkdirat", path.display(), e).into()),
        };
        let next = openat(&dir, part.as_os_str(), flags, Mode::empty()).map_err(|e| {
            let why = if e == nix::errno::Errno::ELOOP {
                nix::errno::Errno::ENOTDIR
            } else {
                e
            };
            SysError::new("open (no symlinks)", path.display(), why)
        })?;
        if created {
            nix::unistd::fchown(&next, Some(uid.into()), Some(uid.into()))
                .map_err(|e| SysError::new("fchown", path.display(), e))?;
        }
        dir = next;
    }
    Ok(dir)
}

/// An aliased overlay's `server.cfg` (None: it has none). Overlays are built from users'
/// scripts: no symlink is followed (it could name any file root can read), and only a
/// regular file of reasonable size is taken (not a FIFO that would block).
fn read_overlay_cfg(path: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    const MAX: u64 = 1 << 20;
    let resolve = crate::sys::fd::Resolve {
        no_symlinks: true,
        ..Default::default()
    };
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
    let fd = match crate::sys::fd::openat2(None, path, flags, 0, resolve) {
        Ok(fd) => fd,
        Err(e) if e.errno == nix::errno::Errno::ENOENT => return Ok(None),
        Err(e) if e.errno == nix::errno::Errno::ELOOP => {
            return Err(Error::Usage(format!(
                "{}: a symlink on the way; an overlay's server.cfg must be a regular file",
                path.display()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let file = std::fs::File::from(fd);
    let meta = file.metadata().at(path)?;
    if !meta.is_file() || meta.len() > MAX {
        return Err(Error::Usage(format!(
            "{}: not a regular file of at most 1 MiB",
            path.display()
        )));
    }
    let mut text = Vec::new();
    file.take(MAX).read_to_end(&mut text).at(path)?;
    Ok(Some(text))
}

/// Writes `name` in `dir` atomically (temp file + rename, both by descriptor), owned by
/// `uid`.
fn stage(dir: &OwnedFd, shown: &Path, name: &str, text: &[u8], uid: u32) -> Result<()> {
    use nix::fcntl::{openat, renameat, OFlag};
    use nix::sys::stat::Mode;
    use std::io::Write;
    let tmp = format!(".{name}.left4me-tmp");
    let _ = nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let path = shown.join(name);
    let fd = openat(dir, tmp.as_str(), flags, Mode::from_bits_truncate(0o644))
        .map_err(|e| SysError::new("open", path.display(), e))?;
    nix::unistd::fchown(&fd, Some(uid.into()), Some(uid.into()))
        .map_err(|e| SysError::new("fchown", path.display(), e))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(text).at(&path)?;
    file.sync_all().at(&path)?;
    renameat(dir, tmp.as_str(), dir, name)
        .map_err(|e| SysError::new("rename", path.display(), e))?;
    Ok(())
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
    let cfg_dir = Path::new("upper/left4dead2/cfg");
    let upper_cfg = dir.join(cfg_dir);
    let cfg_fd = open_dir_chain(&dir, cfg_dir, opts.uid)?;
    let mut server_cfg = spec.config.join("\n");
    server_cfg.push('\n');
    stage(
        &cfg_fd,
        &upper_cfg,
        "server.cfg",
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
        if let Some(text) = read_overlay_cfg(&src)? {
            stage(
                &cfg_fd,
                &upper_cfg,
                &format!("server_{alias}.cfg"),
                &text,
                opts.uid,
            )?;
        }
    }
    let text = serde_json::to_vec_pretty(&doc).expect("JSON");
    crate::state::write_atomic(&dir.join(crate::spec::CONFIG_FILE), &text, 0o644)?;
    Ok(dir)
}
