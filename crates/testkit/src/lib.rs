//! Test support shared by Sextant's crates, tests and benchmarks.
//!
//! - [`fixtures`]: generated meshes of any size and their registry-file text.
//! - [`ads`]: a test ADS client (SotW and delta) with full control of every field.
//! - [`consul`]: a Consul HTTP API double with blocking queries, checked against py-consul.
//! - [`k8s`]: a Kubernetes API server double (Services, EndpointSlices, Nodes; list and watch), checked against kubectl.
//! - [`events`]: reading a registry's event stream with bounded waits.
//! - [`contract`]: the registry contract test every adapter runs.
//! - [`peers`]: real Envoy (launched and killed by the test), HTTP backends, an HTTP client.

#![forbid(unsafe_code)]
#![allow(clippy::panic)]

pub mod ads;
pub mod certs;
pub mod consul;
pub mod contract;
pub mod dns;
pub mod events;
pub mod k8s;
pub mod peers;

pub mod fixtures {
    //! Deterministic services for tests and benchmarks.

    use std::net::{IpAddr, Ipv4Addr};

    use sextant_core::{Endpoint, Locality, Protocol, Service};

    /// The address of endpoint `n` of a generated mesh: 10.x.y.z, unique for
    /// the first 16 million endpoints.
    pub fn endpoint_ip(n: u32) -> IpAddr {
        let [_, a, b, c] = n.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(10, a, b, c))
    }

    /// `services` services named `svc-N.mesh.svc`, each with an `http` port
    /// 8080 and `endpoints_per_service` endpoints spread over three zones.
    pub fn mesh(services: usize, endpoints_per_service: usize) -> Vec<Service> {
        let mut next = 1u32;
        (0..services)
            .map(|i| {
                let mut s = Service::new(format!("svc-{i}.mesh.svc")).with_port(
                    "http",
                    8080,
                    Protocol::Http,
                );
                s.namespace = "mesh".into();
                s.endpoints = (0..endpoints_per_service)
                    .map(|e| {
                        let mut ep =
                            Endpoint::new(endpoint_ip(next).into()).with_port("http", 9000);
                        next += 1;
                        ep.locality = Locality {
                            region: "region-1".into(),
                            zone: format!("zone-{}", e % 3),
                            subzone: String::new(),
                        };
                        ep
                    })
                    .collect();
                s
            })
            .collect()
    }

    /// A registry file (YAML) holding `services`.
    pub fn registry_yaml(services: &[Service]) -> String {
        #[derive(serde::Serialize)]
        struct Doc<'a> {
            services: &'a [Service],
        }
        // Serializing plain data into a String cannot fail.
        serde_yaml_ng::to_string(&Doc { services }).unwrap_or_default()
    }
}
