//! `sextant iptables`: the rules that capture a pod's traffic for its
//! capture-mode proxy, Istio's scheme in the `nat` table of the network
//! namespace it runs in.
//!
//! - Inbound: TCP arriving (PREROUTING) is redirected to the inbound port
//!   (15006), except excluded ports; or only the included ones.
//! - Outbound: TCP the workload opens (OUTPUT) is redirected to the
//!   outbound port (15001), except connections of the proxy's own user
//!   (its upstream connections, and its xDS stream), to loopback, to
//!   excluded CIDRs and ports; or only to included CIDRs.
//!
//! The rules go in four chains of their own (`SEXTANT_*`), jumped to from
//! PREROUTING and OUTPUT, applied at once with `iptables-restore --noflush`
//! (the nf_tables or the legacy variant, whichever `iptables` is here), and
//! removed with `--cleanup`. Run it in the pod's network namespace (an init
//! container does): it changes the namespace it runs in, nothing else.

use std::net::IpAddr;
use std::process::Command;

/// The chains, in the order they are created.
pub const CHAINS: [&str; 4] = [
    "SEXTANT_INBOUND",
    "SEXTANT_IN_REDIRECT",
    "SEXTANT_OUTPUT",
    "SEXTANT_REDIRECT",
];

/// Istio's proxy user id, whose connections are never captured.
pub const PROXY_UID: u32 = 1337;
// The proxy's ports are the ones Sextant gives capture-mode proxies.
use sextant_xds::translate::capture::{INBOUND_PORT, OUTBOUND_PORT};

/// What to capture.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct CaptureRules {
    /// The proxy's user id: its own connections are never captured
    /// (Istio's 1337).
    #[arg(long, default_value_t = PROXY_UID)]
    pub proxy_uid: u32,
    /// Where outbound connections go: the proxy's virtualOutbound.
    #[arg(long, default_value_t = OUTBOUND_PORT)]
    pub outbound_port: u16,
    /// Where inbound connections go: the proxy's virtualInbound.
    #[arg(long, default_value_t = INBOUND_PORT)]
    pub inbound_port: u16,
    /// Capture only these inbound ports [default: all].
    #[arg(long, value_delimiter = ',', value_name = "PORT,...")]
    pub include_inbound_ports: Vec<u16>,
    /// Never capture these inbound ports (ssh, a health port...).
    #[arg(long, value_delimiter = ',', value_name = "PORT,...")]
    pub exclude_inbound_ports: Vec<u16>,
    /// Capture only connections to these CIDRs [default: all].
    #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
    pub include_outbound_cidrs: Vec<Cidr>,
    /// Never capture connections to these CIDRs.
    #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Never capture connections to these ports.
    #[arg(long, value_delimiter = ',', value_name = "PORT,...")]
    pub exclude_outbound_ports: Vec<u16>,
}

impl Default for CaptureRules {
    fn default() -> Self {
        CaptureRules {
            proxy_uid: PROXY_UID,
            outbound_port: OUTBOUND_PORT,
            inbound_port: INBOUND_PORT,
            include_inbound_ports: Vec::new(),
            exclude_inbound_ports: Vec::new(),
            include_outbound_cidrs: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            exclude_outbound_ports: Vec::new(),
        }
    }
}

/// An IPv4 network, `ADDRESS/BITS` (a bare address is /32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(std::net::Ipv4Addr, u8);

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = s.split_once('/').unwrap_or((s, "32"));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 CIDR such as 10.0.0.0/8"))?;
        let IpAddr::V4(v4) = addr else {
            return Err(format!(
                "{s:?}: only IPv4 is captured (the rules are iptables, not ip6tables)"
            ));
        };
        match bits.parse::<u8>() {
            Ok(b) if b <= 32 => Ok(Cidr(v4, b)),
            _ => Err(format!("{s:?}: the prefix length must be 0-32")),
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

impl CaptureRules {
    /// The rules, in `iptables-restore` form.
    pub fn restore_input(&self) -> String {
        let mut out = String::from("*nat\n");
        for chain in CHAINS {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        let mut rule = |r: String| {
            out.push_str(&r);
            out.push('\n');
        };
        rule(format!(
            "-A SEXTANT_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.inbound_port
        ));
        rule(format!(
            "-A SEXTANT_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        ));
        rule("-A PREROUTING -p tcp -j SEXTANT_INBOUND".into());
        for p in &self.exclude_inbound_ports {
            rule(format!("-A SEXTANT_INBOUND -p tcp --dport {p} -j RETURN"));
        }
        if self.include_inbound_ports.is_empty() {
            rule("-A SEXTANT_INBOUND -p tcp -j SEXTANT_IN_REDIRECT".into());
        }
        for p in &self.include_inbound_ports {
            rule(format!(
                "-A SEXTANT_INBOUND -p tcp --dport {p} -j SEXTANT_IN_REDIRECT"
            ));
        }
        rule("-A OUTPUT -p tcp -j SEXTANT_OUTPUT".into());
        rule(format!(
            "-A SEXTANT_OUTPUT -m owner --uid-owner {} -j RETURN",
            self.proxy_uid
        ));
        rule("-A SEXTANT_OUTPUT -d 127.0.0.1/32 -j RETURN".into());
        for c in &self.exclude_outbound_cidrs {
            rule(format!("-A SEXTANT_OUTPUT -d {c} -j RETURN"));
        }
        for p in &self.exclude_outbound_ports {
            rule(format!("-A SEXTANT_OUTPUT -p tcp --dport {p} -j RETURN"));
        }
        if self.include_outbound_cidrs.is_empty() {
            rule("-A SEXTANT_OUTPUT -j SEXTANT_REDIRECT".into());
        }
        for c in &self.include_outbound_cidrs {
            rule(format!("-A SEXTANT_OUTPUT -d {c} -j SEXTANT_REDIRECT"));
        }
        out.push_str("COMMIT\n");
        out
    }
}

/// The `iptables` tools found here: the plain name's variant, else the
/// nf_tables one, else the legacy one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tools {
    /// `iptables`, `iptables-nft` or `iptables-legacy`.
    pub iptables: String,
    /// The matching `iptables-restore`.
    pub restore: String,
    /// What `iptables --version` says (names the variant).
    pub version: String,
}

/// Finds the iptables tools; the error says what to install.
pub fn tools() -> Result<Tools, String> {
    for (iptables, restore) in [
        ("iptables", "iptables-restore"),
        ("iptables-nft", "iptables-nft-restore"),
        ("iptables-legacy", "iptables-legacy-restore"),
    ] {
        let Ok(out) = Command::new(iptables).arg("--version").output() else {
            continue;
        };
        if out.status.success() && Command::new(restore).arg("--version").output().is_ok() {
            return Ok(Tools {
                iptables: iptables.to_owned(),
                restore: restore.to_owned(),
                version: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            });
        }
    }
    Err("no iptables here: install it (Debian: apt-get install iptables)".into())
}

/// Applies `rules` in the current network namespace; refuses to apply
/// twice (run `--cleanup` first).
pub fn apply(rules: &CaptureRules, tools: &Tools) -> Result<(), String> {
    let exists = Command::new(&tools.iptables)
        .args(["-t", "nat", "-S", "SEXTANT_OUTPUT"])
        .output()
        .map_err(|e| format!("{}: {e}", tools.iptables))?;
    if exists.status.success() {
        return Err(
            "the SEXTANT_* chains exist already: run `sextant iptables --cleanup` first".into(),
        );
    }
    let mut child = Command::new(&tools.restore)
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", tools.restore))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(rules.restore_input().as_bytes())
            .map_err(|e| format!("{}: {e}", tools.restore))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", tools.restore))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            tools.restore,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes the jumps and the chains, whatever of them exists.
pub fn cleanup(tools: &Tools) {
    let run = |args: &[&str]| {
        let _ = Command::new(&tools.iptables)
            .args(["-t", "nat"])
            .args(args)
            .output();
    };
    run(&["-D", "PREROUTING", "-p", "tcp", "-j", "SEXTANT_INBOUND"]);
    run(&["-D", "OUTPUT", "-p", "tcp", "-j", "SEXTANT_OUTPUT"]);
    for chain in CHAINS {
        run(&["-F", chain]);
    }
    for chain in CHAINS {
        run(&["-X", chain]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rules_capture_everything_but_the_proxy_and_loopback() {
        let text = CaptureRules::default().restore_input();
        let expected = "*nat
:SEXTANT_INBOUND - [0:0]
:SEXTANT_IN_REDIRECT - [0:0]
:SEXTANT_OUTPUT - [0:0]
:SEXTANT_REDIRECT - [0:0]
-A SEXTANT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A SEXTANT_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A PREROUTING -p tcp -j SEXTANT_INBOUND
-A SEXTANT_INBOUND -p tcp -j SEXTANT_IN_REDIRECT
-A OUTPUT -p tcp -j SEXTANT_OUTPUT
-A SEXTANT_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A SEXTANT_OUTPUT -d 127.0.0.1/32 -j RETURN
-A SEXTANT_OUTPUT -j SEXTANT_REDIRECT
COMMIT
";
        assert_eq!(text, expected);
    }

    #[test]
    fn includes_and_excludes_narrow_the_capture() {
        let rules = CaptureRules {
            proxy_uid: 0,
            include_inbound_ports: vec![8000],
            exclude_inbound_ports: vec![22],
            include_outbound_cidrs: vec!["10.96.0.0/16".parse().expect("cidr")],
            exclude_outbound_cidrs: vec!["169.254.169.254".parse().expect("cidr")],
            exclude_outbound_ports: vec![5432],
            ..CaptureRules::default()
        };
        let text = rules.restore_input();
        for line in [
            "-A SEXTANT_INBOUND -p tcp --dport 22 -j RETURN",
            "-A SEXTANT_INBOUND -p tcp --dport 8000 -j SEXTANT_IN_REDIRECT",
            "-A SEXTANT_OUTPUT -m owner --uid-owner 0 -j RETURN",
            "-A SEXTANT_OUTPUT -d 169.254.169.254/32 -j RETURN",
            "-A SEXTANT_OUTPUT -p tcp --dport 5432 -j RETURN",
            "-A SEXTANT_OUTPUT -d 10.96.0.0/16 -j SEXTANT_REDIRECT",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("-A SEXTANT_INBOUND -p tcp -j SEXTANT_IN_REDIRECT"));
        assert!(!text.contains("-A SEXTANT_OUTPUT -j SEXTANT_REDIRECT"));
        for bad in ["10.0.0.0/33", "fe80::/10", "nope"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
