//! `org.left4me.network=public-only`: the container may reach the internet but not the
//! host's or anyone's private networks — what systemd's `IPAddressDeny=` does for
//! left4me's script sandbox today, done the same way: cgroup socket-address programs on
//! connect() and UDP sendmsg() that refuse (EPERM) loopback, RFC 1918, CGNAT,
//! link-local, multicast, reserved, fc00::/7, and IPv4-mapped IPv6 forms of them.

use std::os::fd::AsFd;

use crate::error::{Error, Result};
use crate::sys::bpf::{self, Insn, SockAddrHook};

pub const ANNOTATION: &str = "org.left4me.network";

/// Whether the config asks for the deny list (`public-only`); other values are errors.
pub fn wanted(spec: &oci_spec::runtime::Spec) -> Result<bool> {
    match spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION)) {
        None => Ok(false),
        Some(v) if v == "public-only" => Ok(true),
        Some(v) => Err(Error::config(
            format!("annotations.{ANNOTATION}"),
            format!("{v:?}: the only value is \"public-only\""),
        )),
    }
}

/// IPv4 ranges as (mask, value) on the address loaded as a little-endian u32 from its
/// network-order bytes (first octet in the low byte).
const V4_DENY: [(u32, u32); 9] = [
    (0x0000_00ff, 0x0000_0000), // 0.0.0.0/8
    (0x0000_00ff, 0x0000_000a), // 10.0.0.0/8
    (0x0000_c0ff, 0x0000_4064), // 100.64.0.0/10
    (0x0000_00ff, 0x0000_007f), // 127.0.0.0/8
    (0x0000_ffff, 0x0000_fea9), // 169.254.0.0/16
    (0x0000_f0ff, 0x0000_10ac), // 172.16.0.0/12
    (0x0000_ffff, 0x0000_a8c0), // 192.168.0.0/16
    (0x0000_00f0, 0x0000_00e0), // 224.0.0.0/4 multicast
    (0x0000_00f0, 0x0000_00f0), // 240.0.0.0/4 reserved, broadcast
];

/// IPv6 ranges on the first word.
const V6_DENY: [(u32, u32); 3] = [
    (0x0000_00fe, 0x0000_00fc), // fc00::/7
    (0x0000_c0ff, 0x0000_80fe), // fe80::/10
    (0x0000_00ff, 0x0000_00ff), // ff00::/8
];

const LDX_W: u8 = 0x61;
const MOV32_X: u8 = 0xbc;
const AND32_K: u8 = 0x54;
const MOV_K: u8 = 0xb7;
const JEQ32_K: u8 = 0x16;
const JNE32_K: u8 = 0x56;
const JA: u8 = 0x05;
const EXIT: u8 = 0x95;

const CTX: u8 = 1;
const ADDR: u8 = 2;
const TMP: u8 = 3;

/// Appends `(mask, value)` checks on `ADDR`; each match jumps to the deny label,
/// patched later.
fn range_checks(p: &mut Vec<Insn>, deny_jumps: &mut Vec<usize>, ranges: &[(u32, u32)]) {
    for &(mask, value) in ranges {
        p.push(Insn::new(MOV32_X, TMP, ADDR, 0, 0));
        p.push(Insn::new(AND32_K, TMP, 0, 0, mask as i32));
        deny_jumps.push(p.len());
        p.push(Insn::new(JEQ32_K, TMP, 0, 0, value as i32));
    }
}

fn finish(mut p: Vec<Insn>, deny_jumps: Vec<usize>) -> Vec<Insn> {
    p.push(Insn::new(MOV_K, 0, 0, 0, 1));
    p.push(Insn::new(EXIT, 0, 0, 0, 0));
    let deny = p.len();
    p.push(Insn::new(MOV_K, 0, 0, 0, 0));
    p.push(Insn::new(EXIT, 0, 0, 0, 0));
    for i in deny_jumps {
        p[i].off = (deny - i - 1) as i16;
    }
    p
}

/// The IPv4 program (connect4, sendmsg4): 1 allows, 0 refuses with EPERM.
pub fn program_v4() -> Vec<Insn> {
    let mut p = vec![Insn::new(LDX_W, ADDR, CTX, 4, 0)]; // user_ip4
    let mut deny = Vec::new();
    range_checks(&mut p, &mut deny, &V4_DENY);
    finish(p, deny)
}

/// The IPv6 program (connect6, sendmsg6).
pub fn program_v6() -> Vec<Insn> {
    let mut p = Vec::new();
    let mut deny = Vec::new();
    p.push(Insn::new(LDX_W, ADDR, CTX, 8, 0)); // user_ip6[0]
    range_checks(&mut p, &mut deny, &V6_DENY);
    // Below: only addresses whose first three words are 0, 0, and 0 or ffff.
    let mut to_allow = Vec::new();
    to_allow.push(p.len());
    p.push(Insn::new(JNE32_K, ADDR, 0, 0, 0));
    p.push(Insn::new(LDX_W, ADDR, CTX, 12, 0)); // user_ip6[1]
    to_allow.push(p.len());
    p.push(Insn::new(JNE32_K, ADDR, 0, 0, 0));
    p.push(Insn::new(LDX_W, TMP, CTX, 16, 0)); // user_ip6[2]
    p.push(Insn::new(LDX_W, ADDR, CTX, 20, 0)); // user_ip6[3]
                                                // ::ffff:a.b.c.d — the IPv4 rules on the last word.
    let mapped = p.len();
    p.push(Insn::new(JEQ32_K, TMP, 0, 0, 0xffff_0000u32 as i32));
    to_allow.push(p.len());
    p.push(Insn::new(JNE32_K, TMP, 0, 0, 0));
    // :: and ::1.
    deny.push(p.len());
    p.push(Insn::new(JEQ32_K, ADDR, 0, 0, 0));
    deny.push(p.len());
    p.push(Insn::new(JEQ32_K, ADDR, 0, 0, 0x0100_0000));
    to_allow.push(p.len());
    p.push(Insn::new(JA, 0, 0, 0, 0));
    let v4_start = p.len();
    p[mapped].off = (v4_start - mapped - 1) as i16;
    range_checks(&mut p, &mut deny, &V4_DENY);
    let allow = p.len();
    for i in to_allow {
        p[i].off = (allow - i - 1) as i16;
    }
    finish(p, deny)
}

/// Loads the programs and attaches them to `group`.
pub fn install(group: &std::path::Path) -> Result<()> {
    let dir = crate::cgroups::Cgroup {
        dir: group.to_path_buf(),
    }
    .open()?;
    let v4 = program_v4();
    let v6 = program_v6();
    for (hook, insns) in [
        (SockAddrHook::Inet4Connect, &v4),
        (SockAddrHook::Udp4Sendmsg, &v4),
        (SockAddrHook::Inet6Connect, &v6),
        (SockAddrHook::Udp6Sendmsg, &v6),
    ] {
        let prog = bpf::load_sock_addr_program(insns, hook, "left4me_netdeny")?;
        bpf::attach_sock_addr_program(dir.as_fd(), prog.as_fd(), hook)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interprets the opcodes above on a context of (ip4, ip6 words).
    fn allows(p: &[Insn], ip4: [u8; 4], ip6: [u8; 16]) -> bool {
        let mut ctx = [0u32; 6];
        ctx[1] = u32::from_le_bytes(ip4);
        for w in 0..4 {
            ctx[2 + w] = u32::from_le_bytes(ip6[4 * w..4 * w + 4].try_into().unwrap());
        }
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            pc += 1;
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            let jump = |taken: bool| if taken { i.off as usize } else { 0 };
            match i.code {
                LDX_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                MOV32_X => r[dst] = r[src] & 0xffff_ffff,
                AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                MOV_K => r[dst] = i.imm as i64 as u64,
                JEQ32_K => pc += jump(r[dst] as u32 == i.imm as u32),
                JNE32_K => pc += jump(r[dst] as u32 != i.imm as u32),
                JA => pc += i.off as usize,
                EXIT => return r[0] == 1,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn v4(a: &str) -> bool {
        let ip: std::net::Ipv4Addr = a.parse().unwrap();
        allows(&program_v4(), ip.octets(), [0; 16])
    }

    fn v6(a: &str) -> bool {
        let ip: std::net::Ipv6Addr = a.parse().unwrap();
        allows(&program_v6(), [0; 4], ip.octets())
    }

    #[test]
    fn private_ranges_are_refused_public_ones_allowed() {
        for denied in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
        ] {
            assert!(!v4(denied), "{denied} allowed");
        }
        for allowed in [
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "198.51.100.7",
            "8.8.8.8",
        ] {
            assert!(v4(allowed), "{allowed} refused");
        }
        for denied in [
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:192.168.0.1",
        ] {
            assert!(!v6(denied), "{denied} allowed");
        }
        for allowed in [
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "fec0::1",
        ] {
            assert!(v6(allowed), "{allowed} refused");
        }
    }

    #[test]
    fn the_kernel_verifier_accepts_the_programs() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        bpf::load_sock_addr_program(&program_v4(), SockAddrHook::Inet4Connect, "t4").unwrap();
        bpf::load_sock_addr_program(&program_v6(), SockAddrHook::Udp6Sendmsg, "t6").unwrap();
    }
}
