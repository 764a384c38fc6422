//! The catalog the double keeps: nodes, service instances and checks, and
//! the index every write raises, as Consul's state store does.

use super::*;

impl Catalog {
    pub(super) fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    pub(super) fn touch_service(&mut self, name: &str, index: u64) {
        self.service_index.insert(name.to_owned(), index);
    }

    /// Touches every service with an instance on `node`.
    pub(super) fn touch_node(&mut self, node: &str, index: u64) {
        let names: Vec<String> = self
            .instances
            .values()
            .filter(|i| i.node == node)
            .map(|i| i.name.clone())
            .collect();
        for n in names {
            self.touch_service(&n, index);
        }
    }

    pub(super) fn service_names(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for inst in self.instances.values() {
            out.entry(inst.name.clone())
                .or_default()
                .extend(inst.tags.iter().cloned());
        }
        out
    }

    pub(super) fn register(
        &mut self,
        node: &str,
        address: &str,
        svc: &Value,
        checks: &[Value],
    ) -> Result<(), String> {
        let name = str_field(svc, "Name");
        let name = if name.is_empty() {
            str_field(svc, "Service")
        } else {
            name
        };
        if name.is_empty() {
            return Err("Missing service name".into());
        }
        let id = match str_field(svc, "ID") {
            s if s.is_empty() => name.clone(),
            s => s,
        };
        let weights = field(svc, "Weights")
            .map(|w| {
                (
                    field(w, "Passing").and_then(Value::as_u64).unwrap_or(1),
                    field(w, "Warning").and_then(Value::as_u64).unwrap_or(1),
                )
            })
            .unwrap_or((1, 1));
        let index = self.bump();
        self.nodes.entry(node.to_owned()).or_insert(Node {
            address: address.to_owned(),
            meta: BTreeMap::new(),
            index,
        });
        let key = (node.to_owned(), id.clone());
        let create_index = self.instances.get(&key).map_or(index, |i| i.create_index);
        let old_name = self.instances.get(&key).map(|i| i.name.clone());
        if let Some(set) = old_name.as_ref().and_then(|old| self.by_name.get_mut(old)) {
            set.remove(&key);
        }
        self.by_name
            .entry(name.clone())
            .or_default()
            .insert(key.clone());
        self.instances.insert(
            key,
            Instance {
                node: node.to_owned(),
                id: id.clone(),
                name: name.clone(),
                tags: field(svc, "Tags")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                address: str_field(svc, "Address"),
                port: field(svc, "Port").and_then(Value::as_u64).unwrap_or(0),
                meta: map_field(svc, "Meta"),
                weights,
                kind: str_field(svc, "Kind"),
                create_index,
                index,
            },
        );
        for (i, check) in checks.iter().enumerate() {
            let check_id = match (str_field(check, "CheckID"), str_field(check, "ID")) {
                (a, _) if !a.is_empty() => a,
                (_, b) if !b.is_empty() => b,
                _ if checks.len() == 1 => format!("service:{id}"),
                _ => format!("service:{id}:{}", i + 1),
            };
            // A TTL check starts critical until its first pass, as in Consul.
            let status = match str_field(check, "Status") {
                s if !s.is_empty() => s,
                _ => "critical".to_owned(),
            };
            let name = match str_field(check, "Name") {
                s if !s.is_empty() => s,
                _ => format!("Service '{name}' check"),
            };
            self.checks.insert(
                (node.to_owned(), id.clone(), check_id.clone()),
                Check {
                    node: node.to_owned(),
                    id: check_id,
                    name,
                    status,
                    output: String::new(),
                    service_id: id.clone(),
                    index,
                },
            );
        }
        self.services_index = index;
        self.touch_service(&name, index);
        if let Some(old) = old_name.filter(|o| *o != name) {
            self.touch_service(&old, index);
        }
        Ok(())
    }

    pub(super) fn deregister(&mut self, node: &str, id: &str) -> bool {
        let key = (node.to_owned(), id.to_owned());
        let Some(inst) = self.instances.remove(&key) else {
            return false;
        };
        if let Some(set) = self.by_name.get_mut(&inst.name) {
            set.remove(&key);
            if set.is_empty() {
                self.by_name.remove(&inst.name);
            }
        }
        self.checks
            .retain(|(n, sid, _), _| !(n == node && sid == id));
        let index = self.bump();
        self.services_index = index;
        self.touch_service(&inst.name, index);
        true
    }

    pub(super) fn set_check(
        &mut self,
        node: &str,
        check_id: &str,
        status: &str,
        output: &str,
    ) -> bool {
        let Some(key) = self
            .checks
            .keys()
            .find(|(n, _, c)| n == node && c == check_id)
            .cloned()
        else {
            return false;
        };
        self.index += 1;
        let index = self.index;
        if let Some(check) = self.checks.get_mut(&key) {
            check.status = status.to_owned();
            check.output = output.to_owned();
            check.index = index;
        }
        let service_id = key.1;
        if let Some(name) = self
            .instances
            .get(&(node.to_owned(), service_id))
            .map(|i| i.name.clone())
        {
            self.touch_service(&name, index);
        } else {
            // A node check touches every service on the node.
            self.touch_node(node, index);
        }
        true
    }

    /// The node's checks, then the instance's.
    pub(super) fn checks_of(&self, inst: &Instance) -> Vec<&Check> {
        let mut out = Vec::new();
        for sid in ["", inst.id.as_str()] {
            out.extend(
                self.checks
                    .range((inst.node.clone(), sid.to_owned(), String::new())..)
                    .take_while(|((n, s, _), _)| *n == inst.node && s == sid)
                    .map(|(_, c)| c),
            );
        }
        out
    }

    pub(super) fn instances_of(&self, name: &str) -> Vec<&Instance> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|k| self.instances.get(k))
            .collect()
    }

    pub(super) fn service_entry(&self, inst: &Instance, dc: &str) -> Value {
        let node = self.nodes.get(&inst.node);
        json!({
            "Node": {
                "ID": "",
                "Node": inst.node,
                "Address": node.map(|n| n.address.clone()).unwrap_or_default(),
                "Datacenter": dc,
                "TaggedAddresses": {},
                "Meta": node.map(|n| n.meta.clone()).unwrap_or_default(),
                "CreateIndex": node.map_or(0, |n| n.index),
                "ModifyIndex": node.map_or(0, |n| n.index),
            },
            "Service": {
                "ID": inst.id,
                "Service": inst.name,
                "Tags": inst.tags,
                "Address": inst.address,
                "TaggedAddresses": {},
                "Meta": inst.meta,
                "Port": inst.port,
                "Weights": { "Passing": inst.weights.0, "Warning": inst.weights.1 },
                "EnableTagOverride": false,
                "Kind": inst.kind,
                "Proxy": {},
                "Connect": {},
                "Datacenter": dc,
                "CreateIndex": inst.create_index,
                "ModifyIndex": inst.index,
            },
            "Checks": self.checks_of(inst).iter().map(|c| json!({
                "Node": c.node,
                "CheckID": c.id,
                "Name": c.name,
                "Status": c.status,
                "Notes": "",
                "Output": c.output,
                "ServiceID": c.service_id,
                "ServiceName": if c.service_id.is_empty() { String::new() } else { inst.name.clone() },
                "ServiceTags": if c.service_id.is_empty() { Vec::new() } else { inst.tags.clone() },
                "Type": "ttl",
                "CreateIndex": c.index,
                "ModifyIndex": c.index,
            })).collect::<Vec<_>>(),
        })
    }
}
