//! `linux.seccomp` normalised: per architecture, syscall number → ordered rules.
//! Syscall names come from the `syscalls` crate's tables (generated from the kernel's
//! syscall tables); a name an architecture lacks is skipped there, as runc does.

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::runtime::{
    Arch as OciArch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::error::{Error, Result};
use crate::sys::seccomp::{FLAG_LOG, FLAG_SPEC_ALLOW, FLAG_TSYNC};

/// What the kernel does with a matching syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    KillProcess,
    KillThread,
    Trap,
    Errno(u16),
    Trace(u16),
    Log,
    Allow,
}

impl Action {
    /// The filter's return value (`SECCOMP_RET_*`).
    pub fn ret(self) -> u32 {
        match self {
            Action::KillProcess => 0x8000_0000,
            Action::KillThread => 0,
            Action::Trap => 0x0003_0000,
            Action::Errno(e) => 0x0005_0000 | u32::from(e),
            Action::Trace(d) => 0x7ff0_0000 | u32::from(d),
            Action::Log => 0x7ffc_0000,
            Action::Allow => 0x7fff_0000,
        }
    }

    /// libseccomp's precedence: when several rules of a syscall match, the most
    /// restrictive action wins (lower is stronger).
    fn precedence(self) -> u8 {
        match self {
            Action::KillProcess => 0,
            Action::KillThread => 1,
            Action::Trap => 2,
            Action::Errno(_) => 3,
            Action::Trace(_) => 4,
            Action::Log => 5,
            Action::Allow => 6,
        }
    }

    /// What a syscall of an architecture the filter does not know gets: the default
    /// action if it denies, otherwise the process is killed (never "allow").
    pub fn for_unknown_arch(self) -> Action {
        match self {
            Action::KillProcess | Action::KillThread | Action::Trap | Action::Errno(_) => self,
            Action::Trace(_) | Action::Log | Action::Allow => Action::KillProcess,
        }
    }
}

/// The architectures one filter can cover on x86_64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arch {
    X86_64,
    X86,
    X32,
}

/// x32 syscalls arrive with the x86_64 audit arch and this bit in the number.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;

impl Arch {
    fn number(self, name: &str) -> Option<u32> {
        match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::from_str(name)
                .ok()
                .map(|s| s.id() as u32),
            Arch::X32 => Arch::X86_64.number(name).map(|n| n | X32_SYSCALL_BIT),
            Arch::X86 => syscalls::x86::Sysno::from_str(name)
                .ok()
                .map(|s| s.id() as u32),
        }
    }

    /// 32-bit architectures pass 32-bit arguments: only the low words are compared.
    pub fn is_32bit(self) -> bool {
        self == Arch::X86
    }
}

/// `args[i] OP value` (for MASKED_EQ: `args[i] & value == value_two`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub index: u8,
    pub op: LinuxSeccompOperator,
    pub value: u64,
    pub value_two: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub conds: Vec<Cond>,
    pub action: Action,
}

/// The normalised filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub default: Action,
    /// Syscall number → rules, most restrictive action first, per architecture.
    pub arches: BTreeMap<Arch, BTreeMap<u32, Vec<Rule>>>,
    pub flags: u32,
}

/// `field` names the action, `errno_field` its errno (`defaultErrnoRet` / `errnoRet`).
fn action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    field: &str,
    errno_field: &str,
) -> Result<Action> {
    let data = |default: u16| -> Result<u16> {
        match errno {
            None => Ok(default),
            Some(e) => u16::try_from(e)
                .map_err(|_| Error::config(errno_field, format!("{e} does not fit 16 bits"))),
        }
    };
    Ok(match a {
        LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            Action::KillThread
        }
        LinuxSeccompAction::ScmpActTrap => Action::Trap,
        LinuxSeccompAction::ScmpActErrno => Action::Errno(data(libc::EPERM as u16)?),
        LinuxSeccompAction::ScmpActTrace => Action::Trace(data(0)?),
        LinuxSeccompAction::ScmpActLog => Action::Log,
        LinuxSeccompAction::ScmpActAllow => Action::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::config(
                field,
                "SCMP_ACT_NOTIFY (a user-space listener) is not supported",
            ))
        }
    })
}

fn arches(list: Option<&Vec<OciArch>>) -> Vec<Arch> {
    // The native architecture is always covered, as libseccomp does.
    let mut out = vec![Arch::X86_64];
    for a in list.into_iter().flatten() {
        let arch = match a {
            OciArch::ScmpArchNative | OciArch::ScmpArchX86_64 => Arch::X86_64,
            OciArch::ScmpArchX86 => Arch::X86,
            OciArch::ScmpArchX32 => Arch::X32,
            other => {
                crate::debug!("linux.seccomp.architectures: {other:?} cannot run here, skipped");
                continue;
            }
        };
        if !out.contains(&arch) {
            out.push(arch);
        }
    }
    out
}

/// Normalises and checks `linux.seccomp`; every error names its field.
pub fn policy(seccomp: &LinuxSeccomp) -> Result<Policy> {
    let base = "linux.seccomp";
    if seccomp.listener_path().is_some() {
        return Err(Error::config(
            format!("{base}.listenerPath"),
            "seccomp user-space listeners (SCMP_ACT_NOTIFY) are not supported",
        ));
    }
    let default = action(
        seccomp.default_action(),
        seccomp.default_errno_ret(),
        &format!("{base}.defaultAction"),
        &format!("{base}.defaultErrnoRet"),
    )?;
    let mut flags = 0;
    for f in seccomp.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(Error::config(
                    format!("{base}.flags"),
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only applies to listeners (SCMP_ACT_NOTIFY), which are not supported",
                ))
            }
        };
    }
    let arch_list = arches(seccomp.architectures().as_ref());
    let mut tables: BTreeMap<Arch, BTreeMap<u32, Vec<Rule>>> =
        arch_list.iter().map(|a| (*a, BTreeMap::new())).collect();
    for (i, sc) in seccomp.syscalls().iter().flatten().enumerate() {
        let field = format!("{base}.syscalls[{i}]");
        let act = action(
            sc.action(),
            sc.errno_ret(),
            &format!("{field}.action"),
            &format!("{field}.errnoRet"),
        )?;
        let mut conds = Vec::new();
        for (j, arg) in sc.args().iter().flatten().enumerate() {
            if arg.index() > 5 {
                return Err(Error::config(
                    format!("{field}.args[{j}].index"),
                    format!("{}: syscalls have 6 arguments (0-5)", arg.index()),
                ));
            }
            let value_two = match (arg.op(), arg.value_two()) {
                (LinuxSeccompOperator::ScmpCmpMaskedEq, None) => {
                    return Err(Error::config(
                        format!("{field}.args[{j}].valueTwo"),
                        "SCMP_CMP_MASKED_EQ needs valueTwo (value is the mask)",
                    ))
                }
                (_, v) => v.unwrap_or(0),
            };
            conds.push(Cond {
                index: arg.index() as u8,
                op: arg.op(),
                value: arg.value(),
                value_two,
            });
        }
        for name in sc.names() {
            let mut known = false;
            for (arch, table) in tables.iter_mut() {
                if let Some(nr) = arch.number(name) {
                    known = true;
                    table.entry(nr).or_default().push(Rule {
                        conds: conds.clone(),
                        action: act,
                    });
                }
            }
            if !known {
                crate::debug!("{field}: unknown syscall {name:?} skipped");
            }
        }
    }
    for table in tables.values_mut() {
        for rules in table.values_mut() {
            rules.sort_by_key(|r| r.action.precedence());
        }
    }
    Ok(Policy {
        default,
        arches: tables,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<Policy> {
        policy(&serde_json::from_value(json).unwrap())
    }

    #[test]
    fn names_map_to_each_architectures_numbers() {
        let p = parse(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
            "syscalls": [{"names": ["getppid", "socketcall", "no_such_call"], "action": "SCMP_ACT_ALLOW"}]
        }))
        .unwrap();
        assert_eq!(p.default, Action::Errno(libc::EPERM as u16));
        assert_eq!(p.arches.len(), 3);
        assert!(p.arches[&Arch::X86_64].contains_key(&110)); // getppid
        assert!(p.arches[&Arch::X86].contains_key(&64)); // getppid on i386
        assert!(p.arches[&Arch::X86].contains_key(&102)); // socketcall exists on i386 only
        assert!(p.arches[&Arch::X32].contains_key(&(110 | X32_SYSCALL_BIT)));
        assert_eq!(p.arches[&Arch::X86_64].len(), 1);
    }

    #[test]
    fn restrictive_actions_come_first() {
        let p = parse(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["kill"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                 "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]}
            ]
        }))
        .unwrap();
        let rules = &p.arches[&Arch::X86_64][&62];
        assert_eq!(rules[0].action, Action::Errno(1));
        assert_eq!(rules[1].action, Action::Allow);
    }

    #[test]
    fn bad_input_names_its_field() {
        let cases = [
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
                "linux.seccomp.syscalls[0].args[0].index",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_MASKED_EQ"}]}]}),
                "valueTwo",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000}),
                "linux.seccomp.defaultErrnoRet",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
                "SCMP_ACT_NOTIFY",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/x.sock"}),
                "linux.seccomp.listenerPath",
            ),
        ];
        for (json, needle) in cases {
            let err = parse(json.clone()).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn an_allowing_default_never_allows_unknown_architectures() {
        assert_eq!(Action::Allow.for_unknown_arch(), Action::KillProcess);
        assert_eq!(Action::Errno(1).for_unknown_arch(), Action::Errno(1));
    }
}
