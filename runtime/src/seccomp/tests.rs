//! The generated programs run through a small classic-BPF interpreter (the opcodes
//! codegen emits), so every path — architectures, x32, the search tree, each operator —
//! is checked without a kernel; the kernel tests live in tests/tests/seccomp.rs.

use serde_json::json;

use super::codegen::program;
use super::rules::{policy, Action, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};
use crate::sys::seccomp::SockFilter;

/// Runs `prog` on (arch, nr, args) and returns the filter's verdict.
fn run(prog: &[SockFilter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let word = |k: u32| u32::from_le_bytes(data[k as usize..k as usize + 4].try_into().unwrap());
    let (mut a, mut pc) = (0u32, 0usize);
    loop {
        let i = prog[pc];
        pc += 1;
        let skip = |taken: bool| if taken { i.jt } else { i.jf } as usize;
        match i.code {
            0x20 => a = word(i.k),
            0x54 => a &= i.k,
            0x05 => pc += i.k as usize,
            0x15 => pc += skip(a == i.k),
            0x25 => pc += skip(a > i.k),
            0x35 => pc += skip(a >= i.k),
            0x06 => return i.k,
            c => panic!("opcode {c:#x} at {}", pc - 1),
        }
    }
}

fn compile(json: serde_json::Value) -> Vec<SockFilter> {
    program(&policy(&serde_json::from_value(json).unwrap()).unwrap())
}

const ALLOW: u32 = 0x7fff_0000;
const EPERM: u32 = 0x0005_0001;
const KILL_PROCESS: u32 = 0x8000_0000;

#[test]
fn each_architecture_uses_its_own_numbers() {
    let p = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}]
    }));
    assert_eq!(run(&p, AUDIT_ARCH_X86_64, 110, [0; 6]), ALLOW);
    assert_eq!(run(&p, AUDIT_ARCH_I386, 64, [0; 6]), ALLOW);
    // 110 on i386 is iopl, not getppid.
    assert_eq!(run(&p, AUDIT_ARCH_I386, 110, [0; 6]), EPERM);
    assert_eq!(run(&p, AUDIT_ARCH_X86_64, 64, [0; 6]), EPERM);
    // An architecture the filter does not list gets the default's denial.
    assert_eq!(run(&p, 0xc000_00b7, 110, [0; 6]), EPERM);
}

#[test]
fn x32_calls_do_not_slip_through_an_x86_64_allow_list() {
    let p = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]
    }));
    assert_eq!(run(&p, AUDIT_ARCH_X86_64, 110, [0; 6]), EPERM);
    // Without x32 listed, any x32 call is an unknown architecture: killed.
    assert_eq!(
        run(&p, AUDIT_ARCH_X86_64, 110 | X32_SYSCALL_BIT, [0; 6]),
        KILL_PROCESS
    );
    let p = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}]
    }));
    assert_eq!(
        run(&p, AUDIT_ARCH_X86_64, 110 | X32_SYSCALL_BIT, [0; 6]),
        ALLOW
    );
    assert_eq!(
        run(&p, AUDIT_ARCH_X86_64, 39 | X32_SYSCALL_BIT, [0; 6]),
        EPERM
    );
}

#[test]
fn every_operator_compares_64_bit_arguments() {
    let big = 0x1_0000_0005u64;
    type Probe = (u64, bool);
    let cases: [(&str, u64, &[Probe]); 6] = [
        (
            "SCMP_CMP_EQ",
            big,
            &[(big, true), (5, false), (big + 1, false)],
        ),
        (
            "SCMP_CMP_NE",
            big,
            &[(big, false), (5, true), (0x2_0000_0005, true)],
        ),
        (
            "SCMP_CMP_GT",
            big,
            &[
                (big + 1, true),
                (big, false),
                (0x2_0000_0000, true),
                (0xffff_ffff, false),
            ],
        ),
        (
            "SCMP_CMP_GE",
            big,
            &[(big, true), (big - 1, false), (0x2_0000_0000, true)],
        ),
        (
            "SCMP_CMP_LT",
            big,
            &[
                (big - 1, true),
                (big, false),
                (0xffff_ffff, true),
                (0x2_0000_0000, false),
            ],
        ),
        (
            "SCMP_CMP_LE",
            big,
            &[(big, true), (big + 1, false), (0, true)],
        ),
    ];
    for (op, value, probes) in cases {
        let p = compile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 1, "value": value, "op": op}]}]
        }));
        for (arg, matches) in probes {
            let got = run(&p, AUDIT_ARCH_X86_64, 62, [0, *arg, 0, 0, 0, 0]);
            assert_eq!(got == EPERM, *matches, "{op} {value:#x} vs {arg:#x}");
        }
    }
    let p = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["clone"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 0, "value": 0x7e02_0000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}]
    }));
    // MASKED_EQ: value is the mask, valueTwo the expected result (Docker's clone rule).
    assert_eq!(run(&p, AUDIT_ARCH_X86_64, 56, [0x11, 0, 0, 0, 0, 0]), EPERM);
    assert_eq!(
        run(&p, AUDIT_ARCH_X86_64, 56, [0x1000_0000, 0, 0, 0, 0, 0]),
        ALLOW
    );
}

#[test]
fn conditions_of_a_rule_all_hold_and_rules_fall_through() {
    let p = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}]}
        ]
    }));
    let enosys = 0x0005_0000 | 38;
    let socket = |dom, ty| run(&p, AUDIT_ARCH_X86_64, 41, [dom, ty, 0, 0, 0, 0]);
    assert_eq!(socket(2, 2), ALLOW);
    assert_eq!(socket(2, 1), enosys);
    assert_eq!(socket(10, 1), ALLOW);
    assert_eq!(socket(1, 1), enosys);
    // i386 compares the low word only (socket is 359 there).
    assert_eq!(
        run(&p, AUDIT_ARCH_I386, 359, [0xdead_0000_0002, 2, 0, 0, 0, 0]),
        ALLOW
    );
}

#[test]
fn four_hundred_rules_stay_a_shallow_search() {
    // One rule per x86_64 syscall (about 370), plus argument rules: over 400 in all.
    let all: Vec<syscalls::x86_64::Sysno> = syscalls::x86_64::Sysno::iter().collect();
    let mut rules: Vec<serde_json::Value> = all
        .iter()
        .filter(|s| s.name() != "kill")
        .map(|s| json!({"names": [s.name()], "action": "SCMP_ACT_ALLOW"}))
        .collect();
    for sig in 0..40u64 {
        rules.push(json!({"names": ["kill"], "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": 1, "value": sig, "op": "SCMP_CMP_EQ"}]}));
    }
    assert!(rules.len() > 400);
    let p = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": rules
    }));
    assert!(
        p.len() < super::codegen::MAX_INSNS,
        "{} instructions",
        p.len()
    );
    for s in all.iter().filter(|s| s.name() != "kill") {
        assert_eq!(
            run(&p, AUDIT_ARCH_X86_64, s.id() as u32, [0; 6]),
            ALLOW,
            "{s}"
        );
    }
    assert_eq!(run(&p, AUDIT_ARCH_X86_64, 62, [0, 39, 0, 0, 0, 0]), ALLOW);
    assert_eq!(run(&p, AUDIT_ARCH_X86_64, 62, [0, 40, 0, 0, 0, 0]), EPERM);
    assert_eq!(run(&p, AUDIT_ARCH_X86_64, 5000, [0; 6]), EPERM);
    // The path to any syscall's verdict is a search, not a scan.
    let worst = all
        .iter()
        .filter(|s| s.name() != "kill")
        .map(|s| steps_to_verdict(&p, AUDIT_ARCH_X86_64, s.id() as u32))
        .max()
        .unwrap();
    assert!(worst < 30, "{worst} instructions for one syscall");
}

fn steps_to_verdict(prog: &[SockFilter], arch: u32, nr: u32) -> usize {
    let (mut a, mut pc, mut n) = (0u32, 0usize, 0);
    loop {
        let i = prog[pc];
        pc += 1;
        n += 1;
        let skip = |taken: bool| if taken { i.jt } else { i.jf } as usize;
        match i.code {
            0x20 => a = if i.k == 0 { nr } else { arch },
            0x05 => pc += i.k as usize,
            0x15 => pc += skip(a == i.k),
            0x35 => pc += skip(a >= i.k),
            0x06 => return n,
            c => panic!("opcode {c:#x}"),
        }
    }
}

#[test]
fn actions_map_to_the_kernels_return_values() {
    assert_eq!(Action::Trap.ret(), 0x0003_0000);
    assert_eq!(Action::Trace(7).ret(), 0x7ff0_0007);
    assert_eq!(Action::Log.ret(), 0x7ffc_0000);
    assert_eq!(Action::KillThread.ret(), 0);
    let p = compile(json!({"defaultAction": "SCMP_ACT_LOG"}));
    assert_eq!(run(&p, AUDIT_ARCH_X86_64, 1, [0; 6]), 0x7ffc_0000);
}

#[test]
fn the_kernel_accepts_the_program() {
    // Loading needs no privilege as a socket filter: the same classic BPF checker.
    let p = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["read", "write", "kill"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LE"}]}]
    }));
    crate::sys::seccomp::check_program(&p).unwrap();
}

#[test]
fn the_shipped_profiles_compile_and_mean_what_they_say() {
    for (name, text) in super::profiles::SHIPPED {
        let p = compile(serde_json::from_str(text).unwrap());
        assert!(p.len() < super::codegen::MAX_INSNS, "{name}: {}", p.len());
    }
    let srcds = compile(serde_json::from_str(super::profiles::SRCDS).unwrap());
    // i386 numbers: mount 21, ptrace 26, reboot 88, socketcall 102, mmap2 192, socket 359.
    assert_eq!(run(&srcds, AUDIT_ARCH_I386, 21, [0; 6]), EPERM);
    assert_eq!(run(&srcds, AUDIT_ARCH_I386, 26, [0; 6]), EPERM);
    assert_eq!(run(&srcds, AUDIT_ARCH_I386, 88, [0; 6]), EPERM);
    assert_eq!(run(&srcds, AUDIT_ARCH_I386, 102, [0; 6]), ALLOW);
    assert_eq!(run(&srcds, AUDIT_ARCH_I386, 192, [0; 6]), ALLOW);
    assert_eq!(run(&srcds, AUDIT_ARCH_I386, 359, [2, 2, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        run(&srcds, AUDIT_ARCH_I386, 359, [16, 3, 0, 0, 0, 0]),
        EPERM
    );
    // x86_64: socket 41 by family, mount 165.
    assert_eq!(
        run(&srcds, AUDIT_ARCH_X86_64, 41, [10, 2, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        run(&srcds, AUDIT_ARCH_X86_64, 41, [16, 3, 0, 0, 0, 0]),
        EPERM
    );
    assert_eq!(run(&srcds, AUDIT_ARCH_X86_64, 165, [0; 6]), EPERM);
    let sandbox = compile(serde_json::from_str(super::profiles::SANDBOX).unwrap());
    // The sandbox is native only: i386 calls are an unknown architecture.
    assert_eq!(run(&sandbox, AUDIT_ARCH_I386, 20, [0; 6]), EPERM);
    let default = compile(serde_json::from_str(super::profiles::DEFAULT).unwrap());
    // clone with CLONE_NEWUSER is refused, a thread's clone is not; clone3 says ENOSYS.
    assert_eq!(
        run(
            &default,
            AUDIT_ARCH_X86_64,
            56,
            [0x1000_0000, 0, 0, 0, 0, 0]
        ),
        EPERM
    );
    assert_eq!(
        run(&default, AUDIT_ARCH_X86_64, 56, [0x3d0f00, 0, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        run(&default, AUDIT_ARCH_X86_64, 435, [0; 6]),
        0x0005_0000 | 38
    );
}

#[test]
fn allow_lists_collapse_into_ranges() {
    // Every x86_64 and i386 syscall allowed by name on three architectures (Docker's
    // default profile is of this shape): contiguous numbers share one segment.
    let mut names: Vec<String> = syscalls::x86_64::Sysno::iter()
        .map(|s| s.name().to_string())
        .collect();
    names.extend(syscalls::x86::Sysno::iter().map(|s| s.name().to_string()));
    let p = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]
    }));
    assert!(p.len() < 600, "{} instructions", p.len());
    for (name, text) in super::profiles::SHIPPED {
        let n = compile(serde_json::from_str(text).unwrap()).len();
        assert!(n < 1000, "{name}: {n} instructions");
    }
}

#[test]
fn syscall_minus_one_is_not_an_x32_call() {
    // A tracer skipping a call sets it to -1; that must meet the default, not a kill.
    let p = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]
    }));
    assert_eq!(run(&p, AUDIT_ARCH_X86_64, u32::MAX, [0; 6]), ALLOW);
    assert_eq!(
        run(&p, AUDIT_ARCH_X86_64, 110 | X32_SYSCALL_BIT, [0; 6]),
        KILL_PROCESS
    );
}
