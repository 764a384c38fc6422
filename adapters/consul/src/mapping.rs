//! How Consul's names become Sextant's: the mapping settings, shared by
//! the conversion of services and of config entries.

use sextant_core::Hostname;

/// How Consul instances become endpoints.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// Hostname template with `{service}`. Default `{service}.service.consul`.
    pub hostname_template: String,
    /// A warning check still receives traffic. Default true (Consul's DNS does the same).
    pub warning_is_healthy: bool,
    /// Include proxy and gateway instances. Default false.
    pub include_gateways: bool,
    /// Node-meta key whose value is the zone. Default none.
    pub zone_meta_key: Option<String>,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            hostname_template: "{service}.service.consul".into(),
            warning_is_healthy: true,
            include_gateways: false,
            zone_meta_key: None,
        }
    }
}

impl Mapping {
    /// The hostname of Consul service `name`.
    pub fn hostname(&self, name: &str) -> Result<Hostname, String> {
        let host = self
            .hostname_template
            .replace("{service}", &name.to_ascii_lowercase());
        match sextant_core::validate::dns_name_problem(&host) {
            None => Ok(Hostname::new(host)),
            Some(p) => Err(format!("hostname {host:?} from service {name:?} {p}")),
        }
    }
}
