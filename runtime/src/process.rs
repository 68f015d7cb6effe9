//! The container's process, from a runtime-owned child to the user's program: limits,
//! scheduling, identity, capabilities, working directory, descriptors, then exec.
//! Shared by the container's init and by `exec`.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{
    IOPriorityClass, LinuxPersonality, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, PosixRlimitType, Process,
};

use crate::capabilities::{self, Sets};
use crate::error::{Context, Error, Result};
use crate::sys::fd::{openat2, Resolve};
use crate::sys::process::{ioprio_set, reset_signals, sched_setattr, set_affinity, SchedParams};
use crate::sys::SysError;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Parses a Linux CPU list (`0-3,6,8-9`).
pub fn parse_cpu_list(list: &str) -> std::result::Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad CPU list {list:?}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                if a > b || b >= 8192 {
                    return Err(format!("bad CPU range {part:?}"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(parse(part)?),
        }
    }
    if cpus.is_empty() {
        return Err(format!("empty CPU list {list:?}"));
    }
    Ok(cpus)
}

/// An rlimit by its OCI name (`RLIMIT_NOFILE`).
pub fn rlimit_by_name(name: &str) -> Option<Resource> {
    serde_json::from_value::<PosixRlimitType>(serde_json::Value::from(name))
        .ok()
        .map(rlimit_resource)
}

fn rlimit_resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Everything that needs the runtime's privileges and is about the process itself:
/// rlimits, scheduler, I/O priority, personality.
pub fn apply_limits(process: &Process, personality: Option<&LinuxPersonality>) -> Result<()> {
    for limit in process.rlimits().iter().flatten() {
        setrlimit(rlimit_resource(limit.typ()), limit.soft(), limit.hard())
            .map_err(|e| {
                SysError::new(
                    "setrlimit",
                    format!(
                        "{} soft {} hard {}",
                        serde_json::to_value(limit.typ())
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_else(|| format!("{:?}", limit.typ())),
                        limit.soft(),
                        limit.hard()
                    ),
                    e,
                )
            })
            .step("process.rlimits")?;
    }
    if let Some(s) = process.scheduler() {
        let policy = match s.policy() {
            LinuxSchedulerPolicy::SchedOther => 0,
            LinuxSchedulerPolicy::SchedFifo => 1,
            LinuxSchedulerPolicy::SchedRr => 2,
            LinuxSchedulerPolicy::SchedBatch => 3,
            LinuxSchedulerPolicy::SchedIso => 4,
            LinuxSchedulerPolicy::SchedIdle => 5,
            LinuxSchedulerPolicy::SchedDeadline => 6,
        };
        let flags = s.flags().iter().flatten().fold(0u64, |acc, f| {
            acc | match f {
                LinuxSchedulerFlag::SchedResetOnFork => 0x01,
                LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
                LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
                LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
                LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
                LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
                LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
            }
        });
        let params = SchedParams {
            policy,
            flags,
            nice: s.nice().unwrap_or(0),
            priority: s.priority().unwrap_or(0).max(0) as u32,
            runtime: s.runtime().unwrap_or(0),
            deadline: s.deadline().unwrap_or(0),
            period: s.period().unwrap_or(0),
        };
        sched_setattr(params).step("process.scheduler")?;
    }
    if let Some(io) = process.io_priority() {
        let class = match io.class() {
            IOPriorityClass::IoprioClassRt => 1,
            IOPriorityClass::IoprioClassBe => 2,
            IOPriorityClass::IoprioClassIdle => 3,
        };
        let level = u16::try_from(io.priority())
            .map_err(|_| Error::config("process.ioPriority.priority", "must be 0-7"))?;
        ioprio_set(class, level).step("process.ioPriority")?;
    }
    if let Some(p) = personality {
        let persona = match p.domain() {
            LinuxPersonalityDomain::PerLinux => nix::sys::personality::Persona::empty(),
            LinuxPersonalityDomain::PerLinux32 => {
                nix::sys::personality::Persona::from_bits_retain(0x0008)
            }
        };
        if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
            return Err(Error::config(
                "linux.personality.flags",
                "personality flags are not supported",
            ));
        }
        nix::sys::personality::set(persona)
            .map_err(|e| SysError::new("personality", format!("{:?}", p.domain()), e))?;
    }
    Ok(())
}

/// When `execCPUAffinity` applies to an exec'd process: `initial` as soon as it exists,
/// `final` once it is in the container's cgroup, right before the exec. (Like runc,
/// neither applies to the container's init: its affinity is the cgroup's.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityStage {
    Initial,
    Final,
}

pub fn apply_exec_affinity(process: &Process, stage: AffinityStage) -> Result<()> {
    let Some(affinity) = process.exec_cpu_affinity() else {
        return Ok(());
    };
    let (list, field) = match stage {
        AffinityStage::Initial => (affinity.initial(), "process.execCPUAffinity.initial"),
        AffinityStage::Final => (
            affinity.cpu_affinity_final(),
            "process.execCPUAffinity.final",
        ),
    };
    let Some(list) = list.as_deref() else {
        return Ok(());
    };
    let cpus = parse_cpu_list(list).map_err(|m| Error::config(field, m))?;
    set_affinity(&cpus).step(field)?;
    Ok(())
}

/// `env` with `HOME` added from the container's /etc/passwd when it is missing (runc's
/// rule; `/` when the user has no entry). Call with `/` being the container's root.
pub fn env_with_home(mut env: Vec<String>, uid: u32) -> Vec<String> {
    if env.iter().any(|v| v.starts_with("HOME=")) {
        return env;
    }
    let home = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| home_in_passwd(&text, uid))
        .unwrap_or_else(|| "/".to_string());
    env.push(format!("HOME={home}"));
    env
}

fn home_in_passwd(text: &str, uid: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7 && fields[2].parse() == Ok(uid) && !fields[5].is_empty())
            .then(|| fields[5].to_string())
    })
}

/// Switches to the configured user and capability sets.
pub fn become_user(process: &Process) -> Result<()> {
    let user = process.user();
    let sets = Sets::from_spec(process.capabilities().as_ref());
    capabilities::limit_bounding(&sets)?;
    capabilities::keep_across_setuid(true)?;
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    // Inside a user namespace whose setgroups is "deny" (rootless), only an empty list
    // would be refused as well: skip the call when there is nothing to set.
    match nix::unistd::setgroups(&groups) {
        Ok(()) => {}
        Err(nix::errno::Errno::EPERM) if groups.is_empty() => {}
        Err(e) => {
            return Err(SysError::new("setgroups", format!("{groups:?}"), e))
                .step("process.user.additionalGids")
        }
    }
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| SysError::new("setresgid", gid, e))
        .step("process.user.gid")?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| SysError::new("setresuid", uid, e))
        .step("process.user.uid")?;
    capabilities::keep_across_setuid(false)?;
    capabilities::apply(&sets)?;
    if process.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| SysError::new("prctl(PR_SET_NO_NEW_PRIVS)", "", e))?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        user.umask().unwrap_or(0o022),
    ));
    Ok(())
}

/// Changes into `process.cwd`, resolved inside the container's root and refusing magic
/// links, so a leaked descriptor (`/proc/self/fd/N`) can never become the working
/// directory.
pub fn enter_cwd(cwd: &Path) -> Result<()> {
    let root = openat2(
        None,
        Path::new("/"),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        Resolve::default(),
    )?;
    let rel: PathBuf = cwd.components().skip(1).collect();
    let rel = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    };
    let dir = openat2(
        Some(root.as_fd()),
        &rel,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        Resolve::IN_ROOT,
    )
    .map_err(|e| SysError::new("openat2", cwd.display(), e.errno))
    .step("process.cwd")?;
    nix::unistd::fchdir(dir.as_fd())
        .map_err(|e| SysError::new("fchdir", cwd.display(), e))
        .step("process.cwd")?;
    let now = nix::unistd::getcwd().map_err(|e| SysError::new("getcwd", cwd.display(), e))?;
    if !now.is_absolute() {
        return Err(Error::Init(format!(
            "process.cwd {} is outside the container",
            cwd.display()
        )));
    }
    Ok(())
}

/// The program to run: `args[0]` itself if it has a `/`, else the first match in the
/// container's `PATH`.
pub fn find_program(args0: &str, env: &[String]) -> Result<PathBuf> {
    let is_exec =
        |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file();
    if args0.contains('/') {
        return Ok(PathBuf::from(args0));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|v| v.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path_var
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(args0))
        .find(|p| is_exec(p))
        .ok_or_else(|| {
            Error::Init(format!(
                "exec {args0:?}: executable file not found in $PATH"
            ))
        })
}

/// With `noNewPrivileges: false` the filter is installed now, before the capabilities
/// are dropped (the kernel then needs CAP_SYS_ADMIN, which init still has), as the OCI
/// spec allows; the rest of the setup runs under it. Otherwise it is returned, to be
/// installed last, right before the exec.
pub fn install_seccomp_early<'a>(
    process: &Process,
    filter: Option<&'a crate::seccomp::Filter>,
) -> Result<Option<&'a crate::seccomp::Filter>> {
    match filter {
        Some(f) if process.no_new_privileges() != Some(true) => {
            f.install()?;
            Ok(None)
        }
        other => Ok(other),
    }
}

/// The exec: descriptors from `3 + preserve_fds` up are closed on exec, signals are reset,
/// a pending seccomp filter is installed, and the program replaces this process. Returns
/// only on failure.
pub fn exec(
    program: &Path,
    args: &[String],
    env: &[String],
    preserve_fds: u32,
    seccomp: Option<&crate::seccomp::Filter>,
) -> Error {
    let to_c = |s: &str| {
        CString::new(s).map_err(|_| Error::config("process", format!("{s:?} contains NUL")))
    };
    let prepared = (|| -> Result<(CString, Vec<CString>, Vec<CString>)> {
        let path = CString::new(program.as_os_str().as_bytes())
            .map_err(|_| Error::config("process.args", "NUL in path"))?;
        let argv = args.iter().map(|a| to_c(a)).collect::<Result<Vec<_>>>()?;
        let envp = env.iter().map(|e| to_c(e)).collect::<Result<Vec<_>>>()?;
        for fd in 0..3 + preserve_fds as i32 {
            if crate::sys::fd::is_open(fd) {
                crate::sys::fd::clear_cloexec(fd)?;
            }
        }
        crate::sys::fd::cloexec_from(3 + preserve_fds)?;
        reset_signals()?;
        if let Some(filter) = seccomp {
            filter.install()?;
        }
        Ok((path, argv, envp))
    })();
    match prepared {
        Ok((path, argv, envp)) => crate::sys::fd::exec_path(&path, &argv, &envp).into(),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_like_the_kernel_prints_them() {
        assert_eq!(parse_cpu_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("2").unwrap(), vec![2]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn home_comes_from_the_matching_passwd_entry() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\nbad\n";
        assert_eq!(home_in_passwd(passwd, 1000).as_deref(), Some("/home/user"));
        assert_eq!(home_in_passwd(passwd, 0).as_deref(), Some("/root"));
        assert_eq!(home_in_passwd(passwd, 5), None);
        let env = vec!["HOME=/x".to_string()];
        assert_eq!(env_with_home(env.clone(), 0), env);
    }

    #[test]
    fn programs_are_found_on_the_container_path() {
        let env = vec!["PATH=/nonexistent:/bin".to_string()];
        assert_eq!(find_program("sh", &env).unwrap(), PathBuf::from("/bin/sh"));
        assert!(find_program("no-such-program-l4m", &env).is_err());
        assert_eq!(find_program("./x", &env).unwrap(), PathBuf::from("./x"));
    }
}
