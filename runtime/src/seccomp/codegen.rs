//! A [`Policy`] as ONE classic BPF program for every architecture it lists:
//!
//! ```text
//! ld arch; for each arch: jeq AUDIT_ARCH → its section; ret <unknown-arch action>
//! section: ld nr; [x86_64: nr == -1 → native; nr ≥ X32 bit → x32 section or unknown-arch]
//!          binary search over the syscall numbers that have rules (depth log2 n)
//!          → leaf: the syscall's rules, most restrictive first: conditions, ret action
//!          numbers without rules, and rules that did not match → ret default
//! ```
//!
//! Conditional jumps reach at most 255 instructions ahead; farther targets go through an
//! unconditional `ja` (32-bit offset). Every block ends in `ret`, so blocks can be laid
//! out one after another without fall-through between them.

use oci_spec::runtime::LinuxSeccompOperator as Op;

use super::rules::{
    Action, Arch, Cond, Policy, Rule, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT,
};
use crate::sys::seccomp::SockFilter;

const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

/// `seccomp_data`: nr at 0, arch at 4, args[i] at 16 + 8i (low word first).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

/// The kernel's limit on one program.
pub const MAX_INSNS: usize = 4096;

fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

fn ret(a: Action) -> SockFilter {
    stmt(RET_K, a.ret())
}

/// Emits `if A <code> k { then } else { otherwise }` where both blocks end in `ret`.
fn branch(code: u16, k: u32, then: Vec<SockFilter>, otherwise: Vec<SockFilter>) -> Vec<SockFilter> {
    let mut out = Vec::with_capacity(then.len() + otherwise.len() + 2);
    match u8::try_from(otherwise.len()) {
        // True skips the else-block, false falls into it.
        Ok(skip) => out.push(jump(code, k, skip, 0)),
        Err(_) => {
            out.push(jump(code, k, 0, 1));
            out.push(stmt(JA, otherwise.len() as u32));
        }
    }
    out.extend(otherwise);
    out.extend(then);
    out
}

/// A condition: falls through when it holds, else jumps to the failure label, which the
/// caller places right after the rule (patched once the rule's length is known).
struct CondCode {
    insns: Vec<SockFilter>,
    /// Instructions whose jt (true) or jf (false) field must reach the failure label.
    fail_true: Vec<usize>,
    fail_false: Vec<usize>,
}

fn cond(c: &Cond, arch: Arch) -> CondCode {
    let lo_off = 16 + 8 * u32::from(c.index);
    let hi_off = lo_off + 4;
    let (vlo, vhi) = (c.value as u32, (c.value >> 32) as u32);
    let ld = |off| stmt(LD_W_ABS, off);
    let mut code = CondCode {
        insns: Vec::new(),
        fail_true: Vec::new(),
        fail_false: Vec::new(),
    };
    let at = |code: &CondCode| code.insns.len();
    if arch.is_32bit() {
        // 32-bit callers pass 32-bit arguments: compare the low words only.
        match c.op {
            Op::ScmpCmpMaskedEq => {
                code.insns.push(ld(lo_off));
                code.insns.push(stmt(ALU_AND_K, vlo));
                code.fail_false.push(at(&code));
                code.insns.push(jump(JEQ_K, c.value_two as u32, 0, 0));
            }
            op => {
                code.insns.push(ld(lo_off));
                let (jcode, fail_on_true) = match op {
                    Op::ScmpCmpEq => (JEQ_K, false),
                    Op::ScmpCmpNe => (JEQ_K, true),
                    Op::ScmpCmpGt => (JGT_K, false),
                    Op::ScmpCmpGe => (JGE_K, false),
                    Op::ScmpCmpLt => (JGE_K, true),
                    Op::ScmpCmpLe => (JGT_K, true),
                    Op::ScmpCmpMaskedEq => unreachable!(),
                };
                if fail_on_true {
                    code.fail_true.push(at(&code));
                } else {
                    code.fail_false.push(at(&code));
                }
                code.insns.push(jump(jcode, vlo, 0, 0));
            }
        }
        return code;
    }
    match c.op {
        Op::ScmpCmpEq => {
            code.insns.push(ld(hi_off));
            code.fail_false.push(at(&code));
            code.insns.push(jump(JEQ_K, vhi, 0, 0));
            code.insns.push(ld(lo_off));
            code.fail_false.push(at(&code));
            code.insns.push(jump(JEQ_K, vlo, 0, 0));
        }
        Op::ScmpCmpNe => {
            // Holds when either word differs.
            code.insns.push(ld(hi_off));
            code.insns.push(jump(JEQ_K, vhi, 0, 2));
            code.insns.push(ld(lo_off));
            code.fail_true.push(at(&code));
            code.insns.push(jump(JEQ_K, vlo, 0, 0));
        }
        Op::ScmpCmpGt | Op::ScmpCmpGe => {
            // hi > vhi holds; hi == vhi decides on the low word; hi < vhi fails.
            let lo_code = if c.op == Op::ScmpCmpGt { JGT_K } else { JGE_K };
            code.insns.push(ld(hi_off));
            code.insns.push(jump(JGT_K, vhi, 3, 0));
            code.fail_false.push(at(&code));
            code.insns.push(jump(JEQ_K, vhi, 0, 0));
            code.insns.push(ld(lo_off));
            code.fail_false.push(at(&code));
            code.insns.push(jump(lo_code, vlo, 0, 0));
        }
        Op::ScmpCmpLt | Op::ScmpCmpLe => {
            // The negation of GE / GT: hi > vhi fails; hi < vhi holds.
            let lo_code = if c.op == Op::ScmpCmpLt { JGE_K } else { JGT_K };
            code.insns.push(ld(hi_off));
            code.fail_true.push(at(&code));
            code.insns.push(jump(JGT_K, vhi, 0, 0));
            code.insns.push(jump(JEQ_K, vhi, 0, 2));
            code.insns.push(ld(lo_off));
            code.fail_true.push(at(&code));
            code.insns.push(jump(lo_code, vlo, 0, 0));
        }
        Op::ScmpCmpMaskedEq => {
            let (mlo, mhi) = (vlo, vhi);
            let (dlo, dhi) = (c.value_two as u32, (c.value_two >> 32) as u32);
            code.insns.push(ld(hi_off));
            code.insns.push(stmt(ALU_AND_K, mhi));
            code.fail_false.push(at(&code));
            code.insns.push(jump(JEQ_K, dhi, 0, 0));
            code.insns.push(ld(lo_off));
            code.insns.push(stmt(ALU_AND_K, mlo));
            code.fail_false.push(at(&code));
            code.insns.push(jump(JEQ_K, dlo, 0, 0));
        }
    }
    code
}

/// One rule: its conditions, then `ret action`; a failed condition jumps past it.
fn rule(r: &Rule, arch: Arch) -> Vec<SockFilter> {
    let mut insns = Vec::new();
    let mut fails: Vec<(usize, bool)> = Vec::new();
    for c in &r.conds {
        let code = cond(c, arch);
        let base = insns.len();
        fails.extend(code.fail_true.iter().map(|i| (base + i, true)));
        fails.extend(code.fail_false.iter().map(|i| (base + i, false)));
        insns.extend(code.insns);
    }
    insns.push(ret(r.action));
    let end = insns.len();
    for (i, on_true) in fails {
        // At most 6 conditions of at most 8 instructions: always within 255.
        let dist = u8::try_from(end - i - 1).expect("a rule fits in 255 instructions");
        if on_true {
            insns[i].jt = dist;
        } else {
            insns[i].jf = dist;
        }
    }
    insns
}

/// A syscall's rules in order; none matching → the default action.
fn leaf(rules: &[Rule], arch: Arch, default: Action) -> Vec<SockFilter> {
    let mut out: Vec<SockFilter> = rules.iter().flat_map(|r| rule(r, arch)).collect();
    out.push(ret(default));
    out
}

/// The number line cut into segments, each `(first number, code)`, covering 0..=u32::MAX:
/// numbers without rules get `ret default`, and neighbours with identical code merge —
/// an allow-list of 350 mostly contiguous syscalls becomes a few dozen segments.
fn segments(policy: &Policy, arch: Arch) -> Vec<(u32, Vec<SockFilter>)> {
    let default = vec![ret(policy.default)];
    let mut out: Vec<(u32, Vec<SockFilter>)> = Vec::new();
    let mut push = |start: u32, code: Vec<SockFilter>| match out.last() {
        Some((_, last)) if *last == code => {}
        _ => out.push((start, code)),
    };
    let mut next = 0u32;
    for (nr, rules) in &policy.arches[&arch] {
        if *nr > next {
            push(next, default.clone());
        }
        push(*nr, leaf(rules, arch, policy.default));
        next = nr.saturating_add(1);
    }
    push(next, default);
    out
}

/// Binary search for the segment holding A (the syscall number).
fn search(segs: &[(u32, Vec<SockFilter>)]) -> Vec<SockFilter> {
    if segs.len() == 1 {
        return segs[0].1.clone();
    }
    let mid = segs.len() / 2;
    let (low, high) = segs.split_at(mid);
    branch(JGE_K, high[0].0, search(high), search(low))
}

fn section(policy: &Policy, arch: Arch) -> Vec<SockFilter> {
    search(&segments(policy, arch))
}

/// The program for `policy`.
pub fn program(policy: &Policy) -> Vec<SockFilter> {
    let unknown = ret(policy.default.for_unknown_arch());
    let has = |a| policy.arches.contains_key(&a);
    let mut sections: Vec<(u32, Vec<SockFilter>)> = Vec::new();
    if has(Arch::X86_64) || has(Arch::X32) {
        let native = if has(Arch::X86_64) {
            section(policy, Arch::X86_64)
        } else {
            vec![unknown]
        };
        let x32 = if has(Arch::X32) {
            section(policy, Arch::X32)
        } else {
            vec![unknown]
        };
        // -1 is no syscall at all (a tracer skipping one, or `syscall(-1)`): it goes to
        // the native rules and default, not to x32, as libseccomp does.
        let mut code = vec![
            stmt(LD_W_ABS, OFF_NR),
            jump(JEQ_K, u32::MAX, 1, 0),
            jump(JGE_K, X32_SYSCALL_BIT, 1, 0),
            stmt(JA, x32.len() as u32),
        ];
        code.extend(x32);
        code.extend(native);
        sections.push((AUDIT_ARCH_X86_64, code));
    }
    if has(Arch::X86) {
        let mut code = vec![stmt(LD_W_ABS, OFF_NR)];
        code.extend(section(policy, Arch::X86));
        sections.push((AUDIT_ARCH_I386, code));
    }
    let mut dispatch = vec![unknown];
    for (audit_arch, code) in sections.into_iter().rev() {
        dispatch = branch(JEQ_K, audit_arch, code, dispatch);
    }
    let mut out = vec![stmt(LD_W_ABS, OFF_ARCH)];
    out.extend(dispatch);
    out
}
