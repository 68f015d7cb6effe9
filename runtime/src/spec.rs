//! Loading, checking and generating config.json.
//!
//! oci-spec gives the types. Two of its habits are wrapped here: an unknown capability
//! name fails its whole parse (runc only warns), so unknown names are dropped with a
//! warning before typing; and its errors lack the field, so parsing goes through
//! serde_path_to_error to name it (`process.user.uid: invalid type...`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde_json::{json, Value};

use crate::error::{Error, IoContext, Result};
use crate::log;

pub const CONFIG_FILE: &str = "config.json";

/// A bundle's config, parsed and checked, with paths made absolute.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    /// The rootfs, absolute.
    pub rootfs: PathBuf,
    /// The `left4me.layers` extension: the rootfs is an overlay of these layers.
    pub layers: Option<crate::layers::LayersConfig>,
    /// The `left4me.userns` extension: an automatically allocated UID/GID block.
    pub userns: Option<crate::idblocks::AutoUserns>,
}

impl Bundle {
    /// Gives the container the user namespace of an allocated block: container ids
    /// 0..65535 map onto host ids `start..start+65535`, and layers marked
    /// `idmapToContainer` are idmapped the same way (on-disk id N appears as container
    /// id N).
    pub fn use_id_block(&mut self, start: u32) -> Result<()> {
        use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespaceBuilder};
        let linux = self
            .spec
            .linux_mut()
            .as_mut()
            .ok_or_else(|| Error::config("linux", "missing"))?;
        let has = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
            m.as_ref().is_some_and(|m| !m.is_empty())
        };
        if has(linux.uid_mappings()) || has(linux.gid_mappings()) {
            return Err(Error::config(
                "left4me.userns.auto",
                "conflicts with explicit linux.uidMappings/gidMappings",
            ));
        }
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        if let Some(user) = namespaces
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::User)
        {
            if user.path().is_some() {
                return Err(Error::config(
                    "left4me.userns.auto",
                    "conflicts with joining a user namespace by path",
                ));
            }
        } else {
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::User)
                    .build()
                    .map_err(|e| Error::config("linux.namespaces", e))?,
            );
        }
        linux.set_namespaces(Some(namespaces));
        let block = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(start)
            .size(crate::idblocks::BLOCK_SIZE)
            .build()
            .map_err(|e| Error::config("linux.uidMappings", e))?;
        linux.set_uid_mappings(Some(vec![block]));
        linux.set_gid_mappings(Some(vec![block]));
        if let Some(layers) = &mut self.layers {
            let range = crate::idmap::IdRange {
                from: 0,
                to: start,
                size: crate::idblocks::BLOCK_SIZE,
            };
            for layer in layers.lower.iter_mut().filter(|l| l.idmap_to_container) {
                layer.uid_mappings = Some(vec![range]);
                layer.gid_mappings = Some(vec![range]);
            }
        }
        Ok(())
    }

    /// Reads `DIR/config.json`, validates it and resolves the rootfs path.
    /// config.json is read through the directory's descriptor and must be a regular
    /// file there (not a symlink): what is validated is what the bundle's owner wrote in
    /// the directory that was opened, whatever is renamed meanwhile.
    pub fn load(dir: &Path) -> Result<Bundle> {
        use std::io::Read;
        let dir_fd = crate::sys::fd::openat2(
            None,
            dir,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            crate::sys::fd::Resolve::default(),
        )?;
        let opened = crate::sys::fd::fd_path(&dir_fd).at(dir)?;
        let path = opened.join(CONFIG_FILE);
        let file = crate::sys::fd::openat2(
            Some(std::os::fd::AsFd::as_fd(&dir_fd)),
            Path::new(CONFIG_FILE),
            libc::O_RDONLY,
            0,
            crate::sys::fd::Resolve {
                no_symlinks: true,
                ..Default::default()
            },
        )
        .map_err(|e| {
            if e.errno == nix::errno::Errno::ELOOP {
                Error::config(
                    path.display().to_string(),
                    "must be a regular file in the bundle, not a symlink",
                )
            } else {
                Error::io(&path, std::io::Error::from_raw_os_error(e.errno as i32))
            }
        })?;
        // A config is kilobytes; a huge one is an attack on the runtime's memory.
        const MAX_CONFIG: u64 = 16 << 20;
        let file = std::fs::File::from(file);
        let size = file.metadata().at(&path)?.len();
        if size > MAX_CONFIG {
            return Err(Error::config(
                path.display().to_string(),
                format!("{size} bytes; a config.json may have at most 16 MiB"),
            ));
        }
        let mut text = String::new();
        file.take(MAX_CONFIG).read_to_string(&mut text).at(&path)?;
        let dir = opened;
        let raw: Value = serde_json::from_str(&text)
            .map_err(|e| Error::config(format!("{}: (json)", path.display()), e))?;
        Self::from_value(dir, raw).map_err(|e| match e {
            Error::Config { field, message } => {
                Error::config(format!("{}: {field}", path.display()), message)
            }
            other => other,
        })
    }

    /// A bundle in `dir` (canonical) whose config.json holds `raw`, validated.
    pub fn from_value(dir: std::path::PathBuf, raw: Value) -> Result<Bundle> {
        let spec = parse_value(raw.clone())?;
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| Error::config("root.path", "missing"))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            dir.join(root.path())
        };
        let layers = crate::layers::LayersConfig::from_config(&raw)?;
        let userns = crate::idblocks::AutoUserns::from_config(&raw)?;
        let bundle = Bundle {
            dir,
            spec,
            rootfs,
            layers,
            userns,
        };
        validate(&bundle)?;
        Ok(bundle)
    }
}

/// Parses config.json text into the typed spec, dropping capability names this runtime
/// does not know (with a warning, as runc does).
pub fn parse(text: &str) -> Result<Spec> {
    let value: Value = serde_json::from_str(text).map_err(|e| Error::config("(json)", e))?;
    parse_value(value)
}

/// [`parse`] for an already decoded document.
pub fn parse_value(mut value: Value) -> Result<Spec> {
    drop_unknown_capabilities(&mut value);
    let spec: Spec = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        Error::config(field, e.into_inner())
    })?;
    Ok(spec)
}

fn drop_unknown_capabilities(value: &mut Value) {
    let Some(sets) = value
        .pointer_mut("/process/capabilities")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (set, names) in sets.iter_mut() {
        let Some(names) = names.as_array_mut() else {
            continue;
        };
        names.retain(|name| {
            let known = name.as_str().is_some_and(|n| {
                caps::Capability::from_str(n).is_ok()
                    && serde_json::from_value::<oci_spec::runtime::Capability>(Value::from(n))
                        .is_ok()
            });
            if !known {
                log::warn(&format!(
                    "process.capabilities.{set}: ignoring unknown capability {name}"
                ));
            }
            known
        });
    }
}

/// The checks that must pass before anything is created.
pub fn validate(bundle: &Bundle) -> Result<()> {
    let spec = &bundle.spec;
    if !spec.version().starts_with("1.") {
        return Err(Error::config(
            "ociVersion",
            format!("unsupported version {:?}", spec.version()),
        ));
    }
    let meta = std::fs::metadata(&bundle.rootfs)
        .at(&bundle.rootfs)
        .map_err(|e| Error::config("root.path", e))?;
    if !meta.is_dir() {
        return Err(Error::config(
            "root.path",
            format!("{} is not a directory", bundle.rootfs.display()),
        ));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::config("process", "missing"))?;
    validate_process(process)?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::config("linux", "missing"))?;
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut seen = HashSet::new();
    for ns in &namespaces {
        if !seen.insert(ns.typ()) {
            return Err(Error::config(
                "linux.namespaces",
                format!("{} listed twice", ns.typ()),
            ));
        }
        if ns.typ() == LinuxNamespaceType::Time {
            return Err(Error::Unsupported(
                "linux.namespaces: time namespaces are not supported".into(),
            ));
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                return Err(Error::config(
                    "linux.namespaces",
                    format!("{} path {} is not absolute", ns.typ(), p.display()),
                ));
            }
        }
    }
    let new_ns = |t: LinuxNamespaceType| {
        namespaces
            .iter()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    let has_ns = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == t);
    let auto_userns = bundle.userns.as_ref().is_some_and(|u| u.auto);
    if auto_userns {
        // Mappings come from the allocated block (Bundle::use_id_block).
    } else if new_ns(LinuxNamespaceType::User) {
        let uid = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        let gid = linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        if !uid || !gid {
            return Err(Error::config(
                "linux.uidMappings",
                "a new user namespace needs uidMappings and gidMappings",
            ));
        }
    } else if linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        && !has_ns(LinuxNamespaceType::User)
    {
        return Err(Error::config(
            "linux.uidMappings",
            "mappings given without a user namespace",
        ));
    }
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !has_ns(LinuxNamespaceType::Uts) {
        return Err(Error::config(
            "hostname",
            "setting the hostname needs a UTS namespace",
        ));
    }
    if spec.domainname().as_ref().is_some_and(|h| !h.is_empty()) && !has_ns(LinuxNamespaceType::Uts)
    {
        return Err(Error::config(
            "domainname",
            "setting the domainname needs a UTS namespace",
        ));
    }
    if !has_ns(LinuxNamespaceType::Mount) {
        return Err(Error::config(
            "linux.namespaces",
            "a mount namespace is required",
        ));
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return Err(Error::config(
                format!("mounts[{i}].destination"),
                format!("{} is not absolute", m.destination().display()),
            ));
        }
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            crate::sysctl::check_namespaced(key, &|t| has_ns(t))
                .map_err(|m| Error::config(format!("linux.sysctl.{key}"), m))?;
        }
    }
    if let Some(prop) = linux.rootfs_propagation() {
        if !prop.is_empty() {
            crate::rootfs::parse_root_propagation(prop)?;
        }
    }
    Ok(())
}

fn validate_process(process: &oci_spec::runtime::Process) -> Result<()> {
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::config("process.args", "must name a program"));
    }
    if !process.cwd().is_absolute() {
        return Err(Error::config(
            "process.cwd",
            format!("{} is not absolute", process.cwd().display()),
        ));
    }
    for (i, var) in process.env().iter().flatten().enumerate() {
        if !var.contains('=') || var.contains('\0') {
            return Err(Error::config(
                format!("process.env[{i}]"),
                format!("{var:?} is not KEY=VALUE"),
            ));
        }
    }
    if let Some(affinity) = process.exec_cpu_affinity() {
        for cpus in [affinity.initial(), affinity.cpu_affinity_final()]
            .into_iter()
            .flatten()
        {
            crate::process::parse_cpu_list(cpus)
                .map_err(|m| Error::config("process.execCPUAffinity", m))?;
        }
    }
    Ok(())
}

/// runc's default config (`runc spec`), so bundles made by either runtime look alike.
pub fn default_config() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            "seccomp": serde_json::from_str::<Value>(crate::seccomp::profiles::DEFAULT)
                .expect("the embedded default profile is JSON")
        }
    })
}

/// runc's `spec --rootless` variant: a user namespace mapping the caller, no network
/// namespace, and bind-mounted /sys.
pub fn rootless_config(uid: u32, gid: u32) -> Value {
    let mut config = default_config();
    let linux = &mut config["linux"];
    linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
    linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    linux["namespaces"] = json!([
        {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}, {"type": "user"}
    ]);
    linux.as_object_mut().map(|l| l.remove("resources"));
    let mounts = config["mounts"]
        .as_array_mut()
        .expect("default mounts are an array");
    mounts.retain(|m| m["destination"] != "/sys/fs/cgroup");
    // /dev/mqueue stays a real mqueue mount: the container's IPC namespace belongs to its
    // user namespace (runc binds the host's, which not every host has mounted).
    for m in mounts.iter_mut() {
        if m["destination"] == "/sys" {
            *m = json!({"destination": "/sys", "type": "none", "source": "/sys",
                        "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
        }
        if m["destination"] == "/dev/pts" {
            m["options"] = json!([
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620"
            ]);
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses_with_oci_spec() {
        let spec = parse(&default_config().to_string()).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("runc"));
        let spec = parse(&rootless_config(1000, 1000).to_string()).unwrap();
        assert!(spec.linux().as_ref().unwrap().uid_mappings().is_some());
    }

    #[test]
    fn unknown_capabilities_are_dropped_not_fatal() {
        let mut config = default_config();
        config["process"]["capabilities"]["bounding"] = json!(["CAP_KILL", "CAP_FROM_THE_FUTURE"]);
        let spec = parse(&config.to_string()).unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 1);
    }

    #[test]
    fn type_errors_name_the_field() {
        let mut config = default_config();
        config["process"]["user"]["uid"] = json!("root");
        let err = parse(&config.to_string()).unwrap_err().to_string();
        assert!(err.contains("process.user.uid"), "{err}");
        let err = parse("{not json").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
