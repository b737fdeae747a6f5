//! The node's place in a cluster, by Kafka's KRaft property names: `node.id`, `process.roles`,
//! `listeners` with `listener.security.protocol.map` and `controller.listener.names`,
//! `advertised.listeners`, `controller.quorum.voters` and `broker.rack`.
//!
//! They are checked together at start, with Kafka's rules (`KafkaConfig`'s validation) where
//! Kafka has them. What passes is what this node runs; everything else is refused with the
//! property's name and why. Nothing is accepted and then ignored. The embedded default (no
//! settings at all) is a single node that is its own controller quorum of one, listening for
//! clients on 127.0.0.1:9092.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{BrokerConfig, ConfigError};

/// Each shard of node n is broker `n * 1000 + s`, an i32 on the wire: the largest node id whose
/// shards all have one.
pub const NODE_ID_MAX: i64 = (i32::MAX as i64 - 999) / 1000;

/// Shards a node may run: each is broker `node * 1000 + shard`, so a thousandth would collide
/// with the next node's first.
pub const SHARDS_PER_NODE_MAX: usize = 1000;

/// A named listener: `NAME://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
}

/// A controller quorum voter: `ID@HOST:PORT` in `controller.quorum.voters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

/// Where clients are told to connect: `advertised.listeners` (or `advertised.host.name`), else
/// the client listener's own address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertised {
    /// `None`: the listener's host (or "localhost" where it binds every interface).
    pub host: Option<String>,
    /// Shard 0's port, shard s being advertised at this plus s; `None` (or 0 in the setting):
    /// the port each shard bound.
    pub port: Option<u16>,
}

/// The node's cluster settings, checked together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub node_id: i32,
    /// The one listener clients (and, with cluster mode, other brokers) connect to. Shard s
    /// listens on its port plus s.
    pub client_listener: Listener,
    pub advertised: Advertised,
    /// Where shard 0 listens for the other voters (with `voters` only).
    pub controller_listener: Option<Listener>,
    /// The controller quorum's voters; a single node with no setting is a quorum of one.
    pub voters: Vec<Voter>,
    /// `broker.rack`, reported in Metadata and DescribeCluster.
    pub rack: Option<String>,
}

fn invalid(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Splits a comma-separated list, dropping blanks around and between entries (Kafka's
/// `Utils.split` on a trimmed value).
fn list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
}

/// Parses `HOST:PORT` where the host is a numeric IP, `[v6]`, or empty (every interface).
fn socket_address(text: &str) -> Option<SocketAddr> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        host.parse().ok()?
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses `HOST:PORT` where the host is a name or an IP (`[v6]` for IPv6), as an advertised
/// address or a voter's is: it is looked up by whoever connects, not bound here.
fn host_and_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'));
    valid.then(|| (host.to_string(), port))
}

/// A listener name as Kafka normalises it (upper case); it must be a word.
fn listener_name(raw: &str) -> Option<String> {
    let name = raw.trim().to_ascii_uppercase();
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

/// `listeners`: `NAME://HOST:PORT,...`; a bare `HOST:PORT` (this broker's older form) is a
/// PLAINTEXT listener.
fn parse_listeners(value: &str) -> Result<Vec<Listener>, ConfigError> {
    let mut listeners: Vec<Listener> = Vec::new();
    for entry in list(value) {
        let (name, address) = match entry.split_once("://") {
            Some((name, address)) => (name, address),
            None => ("PLAINTEXT", entry),
        };
        let name = listener_name(name).ok_or_else(|| {
            invalid(
                "listeners",
                value,
                format!("{entry:?}: a listener name is a word, such as PLAINTEXT or CONTROLLER"),
            )
        })?;
        let address = socket_address(address).ok_or_else(|| {
            invalid(
                "listeners",
                value,
                format!(
                    "{entry:?}: expected NAME://HOST:PORT with a numeric IP, such as \
                     PLAINTEXT://127.0.0.1:9092"
                ),
            )
        })?;
        if listeners.iter().any(|listener| listener.name == name) {
            return Err(invalid(
                "listeners",
                value,
                format!("listener {name} is named twice"),
            ));
        }
        if address.port() != 0
            && listeners
                .iter()
                .any(|listener| listener.address.port() == address.port())
        {
            return Err(invalid(
                "listeners",
                value,
                format!("two listeners share port {}", address.port()),
            ));
        }
        listeners.push(Listener { name, address });
    }
    if listeners.is_empty() {
        return Err(invalid("listeners", value, "no listener is given"));
    }
    Ok(listeners)
}

/// `listener.security.protocol.map`: `NAME:PROTOCOL,...`.
fn parse_protocol_map(value: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let name = "listener.security.protocol.map";
    let mut map = BTreeMap::new();
    for entry in list(value) {
        let (listener, protocol) = entry
            .split_once(':')
            .and_then(|(listener, protocol)| Some((listener_name(listener)?, protocol)))
            .ok_or_else(|| invalid(name, value, format!("{entry:?}: expected NAME:PROTOCOL")))?;
        let protocol = protocol.trim().to_ascii_uppercase();
        if !matches!(
            protocol.as_str(),
            "PLAINTEXT" | "SSL" | "SASL_PLAINTEXT" | "SASL_SSL"
        ) {
            return Err(invalid(
                name,
                value,
                format!("{protocol:?} is not a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"),
            ));
        }
        if map.insert(listener.clone(), protocol).is_some() {
            return Err(invalid(name, value, format!("{listener} is mapped twice")));
        }
    }
    Ok(map)
}

/// `controller.quorum.voters`: `ID@HOST:PORT,...`.
fn parse_voters(value: &str) -> Result<Vec<Voter>, ConfigError> {
    let name = "controller.quorum.voters";
    let mut voters: Vec<Voter> = Vec::new();
    for entry in list(value) {
        let voter = entry
            .split_once('@')
            .and_then(|(id, address)| {
                let id: i64 = id.trim().parse().ok()?;
                let (host, port) = host_and_port(address.trim())?;
                Some((id, host, port))
            })
            .ok_or_else(|| {
                invalid(
                    name,
                    value,
                    format!("{entry:?}: expected ID@HOST:PORT, such as 1@127.0.0.1:9093"),
                )
            })?;
        let (id, host, port) = voter;
        if !(0..=NODE_ID_MAX).contains(&id) {
            return Err(invalid(
                name,
                value,
                format!("voter id {id} is not a node id (0 to {NODE_ID_MAX})"),
            ));
        }
        if port == 0 {
            return Err(invalid(name, value, format!("voter {id} has port 0")));
        }
        if voters.iter().any(|voter| i64::from(voter.id) == id) {
            return Err(invalid(name, value, format!("voter {id} is listed twice")));
        }
        voters.push(Voter {
            id: id as i32,
            host,
            port,
        });
    }
    Ok(voters)
}

/// `process.roles`: this broker runs combined nodes, each a broker with the controller quorum
/// on its shard 0.
fn check_roles(value: &str) -> Result<(), ConfigError> {
    let name = "process.roles";
    let mut roles = BTreeSet::new();
    for role in list(value) {
        let role = role.to_ascii_lowercase();
        if !matches!(role.as_str(), "broker" | "controller") {
            return Err(invalid(
                name,
                value,
                format!("{role:?} is not a role (broker, controller)"),
            ));
        }
        if !roles.insert(role.clone()) {
            return Err(invalid(name, value, format!("{role} is named twice")));
        }
    }
    match (roles.contains("broker"), roles.contains("controller")) {
        (true, true) => Ok(()),
        (false, false) => Err(invalid(name, value, "expected broker,controller")),
        (true, false) => Err(ConfigError::NotSupported {
            name: name.into(),
            reason: "a broker-only node needs a separate controller quorum; every node here \
                     runs the quorum on its shard 0 (process.roles=broker,controller)",
        }),
        (false, true) => Err(ConfigError::NotSupported {
            name: name.into(),
            reason: "a controller-only node is not supported; every node here serves clients \
                     and runs the quorum on its shard 0 (process.roles=broker,controller)",
        }),
    }
}

impl BrokerConfig {
    /// The node's cluster settings, checked together; the error names the property at fault.
    pub fn node_settings(&self) -> Result<NodeSettings, ConfigError> {
        let node_id = self.node_id();
        check_roles(self.get("process.roles"))?;

        let listeners = parse_listeners(self.get("listeners"))?;
        let protocols = parse_protocol_map(self.get("listener.security.protocol.map"))?;
        for listener in &listeners {
            let protocol = protocols.get(&listener.name).ok_or_else(|| {
                invalid(
                    "listener.security.protocol.map",
                    self.get("listener.security.protocol.map"),
                    format!("listener {} has no security protocol", listener.name),
                )
            })?;
            if protocol != "PLAINTEXT" {
                return Err(ConfigError::Invalid {
                    name: "listeners".into(),
                    value: self.get("listeners").into(),
                    reason: format!(
                        "listener {} uses {protocol}; TLS and SASL are not supported, only \
                         PLAINTEXT",
                        listener.name
                    ),
                });
            }
        }
        let controller_names: Vec<String> = list(self.get("controller.listener.names"))
            .map(|name| {
                listener_name(name).ok_or_else(|| {
                    invalid(
                        "controller.listener.names",
                        self.get("controller.listener.names"),
                        format!("{name:?} is not a listener name"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        if controller_names.is_empty() {
            return Err(invalid(
                "controller.listener.names",
                "",
                "name the controller's listener (Kafka's and this broker's default: CONTROLLER)",
            ));
        }
        let (controller, client): (Vec<Listener>, Vec<Listener>) = listeners
            .into_iter()
            .partition(|listener| controller_names.contains(&listener.name));
        let mut client = client.into_iter();
        let client_listener = client.next().ok_or_else(|| {
            invalid(
                "listeners",
                self.get("listeners"),
                "no listener for clients: every listener is named in controller.listener.names",
            )
        })?;
        if let Some(second) = client.next() {
            return Err(ConfigError::Invalid {
                name: "listeners".into(),
                value: self.get("listeners").into(),
                reason: format!(
                    "one client listener per node is supported (each shard listens on its port \
                     plus the shard's index); {} and {} are both client listeners",
                    client_listener.name, second.name
                ),
            });
        }

        let advertised = self.advertised(&client_listener, &controller_names)?;

        if !self
            .get("controller.quorum.bootstrap.servers")
            .trim()
            .is_empty()
        {
            return Err(ConfigError::NotSupported {
                name: "controller.quorum.bootstrap.servers".into(),
                reason: "a dynamic quorum (KIP-853) is not supported; list the voters in \
                         controller.quorum.voters",
            });
        }
        let voters = parse_voters(self.get("controller.quorum.voters"))?;
        if !voters.is_empty() {
            let Some(own) = voters.iter().find(|voter| voter.id == node_id) else {
                return Err(invalid(
                    "controller.quorum.voters",
                    self.get("controller.quorum.voters"),
                    format!(
                        "node.id {node_id} is not among the voters; every node here is a \
                         controller (process.roles=broker,controller)"
                    ),
                ));
            };
            match controller.first() {
                None => {
                    return Err(invalid(
                        "listeners",
                        self.get("listeners"),
                        format!(
                            "controller.quorum.voters lists this node at port {}, so a \
                             listener named in controller.listener.names ({}) must listen \
                             there",
                            own.port,
                            controller_names.join(",")
                        ),
                    ))
                }
                Some(listener) if listener.address.port() != own.port => {
                    return Err(invalid(
                        "listeners",
                        self.get("listeners"),
                        format!(
                            "the controller listener {} is on port {}, but \
                             controller.quorum.voters lists this node at port {}",
                            listener.name,
                            listener.address.port(),
                            own.port
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(listener) = controller.first() {
            if voters.is_empty() {
                return Err(invalid(
                    "controller.quorum.voters",
                    "",
                    format!(
                        "the controller listener {} has no quorum to serve; list the voters, \
                         this node among them",
                        listener.name
                    ),
                ));
            }
        }
        if controller.len() > 1 {
            return Err(invalid(
                "listeners",
                self.get("listeners"),
                "one controller listener per node: the quorum runs on shard 0 and listens once",
            ));
        }

        let rack = Some(self.get("broker.rack").trim().to_string()).filter(|rack| !rack.is_empty());
        Ok(NodeSettings {
            node_id,
            client_listener,
            advertised,
            controller_listener: controller.into_iter().next(),
            voters,
            rack,
        })
    }

    /// `advertised.listeners` (Kafka's) or `advertised.host.name` (this broker's shorthand, the
    /// `--advertised-host` flag), not both.
    fn advertised(
        &self,
        client: &Listener,
        controller_names: &[String],
    ) -> Result<Advertised, ConfigError> {
        let name = "advertised.listeners";
        let value = self.get(name);
        let host_flag = Some(self.get("advertised.host.name").trim().to_string())
            .filter(|host| !host.is_empty());
        let mut advertised = None;
        for entry in list(value) {
            let (listener, address) = entry
                .split_once("://")
                .and_then(|(listener, address)| Some((listener_name(listener)?, address)))
                .ok_or_else(|| {
                    invalid(name, value, format!("{entry:?}: expected NAME://HOST:PORT"))
                })?;
            if controller_names.contains(&listener) {
                return Err(invalid(
                    name,
                    value,
                    format!("{listener} is a controller listener; clients are never sent to it"),
                ));
            }
            if listener != client.name {
                return Err(invalid(
                    name,
                    value,
                    format!("{listener} is not a client listener in listeners"),
                ));
            }
            if advertised.is_some() {
                return Err(invalid(name, value, format!("{listener} is named twice")));
            }
            let (host, port) = host_and_port(address).ok_or_else(|| {
                invalid(name, value, format!("{entry:?}: expected NAME://HOST:PORT"))
            })?;
            if host == "0.0.0.0" || host == "::" {
                return Err(invalid(
                    name,
                    value,
                    format!("{host} is not an address clients can reach"),
                ));
            }
            advertised = Some(Advertised {
                host: Some(host),
                port: (port != 0).then_some(port),
            });
        }
        match (advertised, host_flag) {
            (Some(_), Some(_)) => Err(invalid(
                "advertised.host.name",
                self.get("advertised.host.name"),
                "advertised.listeners is set too; give the host there",
            )),
            (Some(advertised), None) => Ok(advertised),
            (None, host) => Ok(Advertised { host, port: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<NodeSettings, ConfigError> {
        let mut config = BrokerConfig::default();
        for (name, value) in pairs {
            config.set(name, value)?;
        }
        config.node_settings()
    }

    fn refusal(pairs: &[(&str, &str)]) -> String {
        match settings(pairs) {
            Ok(settings) => panic!("{pairs:?} was accepted: {settings:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn the_embedded_default_is_one_plaintext_listener_and_a_quorum_of_one() {
        let settings = settings(&[]).unwrap();
        assert_eq!(settings.node_id, 0);
        assert_eq!(
            settings.client_listener,
            Listener {
                name: "PLAINTEXT".into(),
                address: "127.0.0.1:9092".parse().unwrap()
            }
        );
        assert_eq!(
            settings.advertised,
            Advertised {
                host: None,
                port: None
            }
        );
        assert!(settings.voters.is_empty());
        assert_eq!(settings.rack, None);
    }

    #[test]
    fn listeners_take_kafkas_form_and_the_older_bare_address() {
        let named = settings(&[
            ("listeners", "client://10.0.0.5:9192"),
            (
                "listener.security.protocol.map",
                "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
        ])
        .unwrap();
        assert_eq!(named.client_listener.name, "CLIENT");
        assert_eq!(named.client_listener.address.port(), 9192);
        let bare = settings(&[("listeners", "127.0.0.2:0")]).unwrap();
        assert_eq!(bare.client_listener.name, "PLAINTEXT");
        let every_interface = settings(&[("listeners", "PLAINTEXT://:9092")]).unwrap();
        assert!(every_interface
            .client_listener
            .address
            .ip()
            .is_unspecified());
        let v6 = settings(&[("listeners", "PLAINTEXT://[::1]:9092")]).unwrap();
        assert!(v6.client_listener.address.is_ipv6());
    }

    #[test]
    fn listener_mistakes_are_refused_naming_the_property() {
        assert!(refusal(&[("listeners", "PLAINTEXT://broker.example:9092")]).contains("numeric IP"));
        assert!(refusal(&[(
            "listeners",
            "PLAINTEXT://127.0.0.1:9092,PLAINTEXT://127.0.0.1:9093"
        )])
        .contains("named twice"));
        assert!(refusal(&[(
            "listeners",
            "PLAINTEXT://127.0.0.1:9092,EXTERNAL://127.0.0.1:9092"
        )])
        .contains("share port"));
        assert!(refusal(&[("listeners", "INTERNAL://127.0.0.1:9092")])
            .contains("listener INTERNAL has no security protocol"));
        assert!(refusal(&[("listeners", "SSL://127.0.0.1:9093")])
            .contains("TLS and SASL are not supported"));
        assert!(refusal(&[
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,EXTERNAL://127.0.0.1:9094"
            ),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT"
            )
        ])
        .contains("one client listener per node"));
        assert!(refusal(&[("listeners", "CONTROLLER://127.0.0.1:9093")])
            .contains("no listener for clients"));
        assert!(
            refusal(&[("listener.security.protocol.map", "PLAINTEXT:TLS")])
                .contains("not a security protocol")
        );
        assert!(refusal(&[("listeners", "")]).contains("no listener"));
    }

    #[test]
    fn advertised_listeners_name_the_client_listener_and_a_reachable_host() {
        let advertised =
            settings(&[("advertised.listeners", "PLAINTEXT://broker-1.example:19092")])
                .unwrap()
                .advertised;
        assert_eq!(advertised.host.as_deref(), Some("broker-1.example"));
        assert_eq!(advertised.port, Some(19092));
        let port_zero = settings(&[("advertised.listeners", "PLAINTEXT://10.1.2.3:0")])
            .unwrap()
            .advertised;
        assert_eq!(port_zero.port, None);
        let shorthand = settings(&[("advertised.host.name", "broker-1")])
            .unwrap()
            .advertised;
        assert_eq!(shorthand.host.as_deref(), Some("broker-1"));

        assert!(
            refusal(&[("advertised.listeners", "EXTERNAL://10.1.2.3:9092")])
                .contains("not a client listener")
        );
        assert!(
            refusal(&[("advertised.listeners", "CONTROLLER://10.1.2.3:9093")])
                .contains("controller listener")
        );
        assert!(
            refusal(&[("advertised.listeners", "PLAINTEXT://0.0.0.0:9092")])
                .contains("not an address clients can reach")
        );
        assert!(refusal(&[
            ("advertised.listeners", "PLAINTEXT://10.1.2.3:9092"),
            ("advertised.host.name", "other"),
        ])
        .contains("advertised.listeners is set too"));
    }

    #[test]
    fn roles_are_combined_and_the_others_are_refused_with_why() {
        assert!(settings(&[("process.roles", "controller, broker")]).is_ok());
        assert!(refusal(&[("process.roles", "broker")]).contains("separate controller quorum"));
        assert!(refusal(&[("process.roles", "controller")]).contains("controller-only"));
        assert!(refusal(&[("process.roles", "broker,broker")]).contains("named twice"));
        assert!(refusal(&[("process.roles", "zookeeper")]).contains("not a role"));
        assert!(refusal(&[("process.roles", "")]).contains("expected broker,controller"));
    }

    #[test]
    fn voters_are_checked_with_kafkas_rules() {
        for (voters, expected) in [
            ("1@127.0.0.1", "expected ID@HOST:PORT"),
            ("x@127.0.0.1:9093", "expected ID@HOST:PORT"),
            ("0@127.0.0.1:9093,0@127.0.0.2:9093", "listed twice"),
            ("0@127.0.0.1:0", "port 0"),
            ("3000000@127.0.0.1:9093", "not a node id"),
            (
                "1@127.0.0.1:9093,2@127.0.0.2:9093",
                "node.id 0 is not among the voters",
            ),
            ("0@127.0.0.1:9093", "must listen there"),
        ] {
            let refused = refusal(&[("controller.quorum.voters", voters)]);
            assert!(refused.contains(expected), "{voters}: {refused}");
        }
        let with_listener = |voters: &str| {
            refusal(&[
                (
                    "listeners",
                    "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
                ),
                ("controller.quorum.voters", voters),
            ])
        };
        assert!(with_listener("0@127.0.0.1:9094").contains("on port 9093"));
        let three = settings(&[
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
            ),
            (
                "controller.quorum.voters",
                "0@127.0.0.1:9093,1@127.0.0.2:9093,2@broker-3.example:9093",
            ),
        ])
        .unwrap();
        assert_eq!(three.voters.len(), 3);
        assert_eq!(three.voters[2].host, "broker-3.example");
        assert_eq!(
            three
                .controller_listener
                .map(|listener| listener.address.port()),
            Some(9093)
        );
        assert!(refusal(&[(
            "listeners",
            "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
        )])
        .contains("no quorum to serve"));
        assert!(
            refusal(&[("controller.quorum.bootstrap.servers", "127.0.0.1:9093")])
                .contains("KIP-853")
        );
    }

    #[test]
    fn node_ids_stop_where_a_shards_broker_id_would_overflow() {
        assert!(settings(&[("node.id", &NODE_ID_MAX.to_string())]).is_ok());
        let mut config = BrokerConfig::default();
        assert!(config
            .set("node.id", &(NODE_ID_MAX + 1).to_string())
            .is_err());
        // Its last shard's broker id still fits.
        assert!(NODE_ID_MAX * 1000 + (SHARDS_PER_NODE_MAX as i64 - 1) <= i64::from(i32::MAX));
    }

    #[test]
    fn the_rack_is_reported_as_given() {
        assert_eq!(
            settings(&[("broker.rack", " eu-west-1a ")])
                .unwrap()
                .rack
                .as_deref(),
            Some("eu-west-1a")
        );
    }
}
