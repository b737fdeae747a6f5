//! AlterConfigs (key 33) and IncrementalAlterConfigs (key 44) as the controller applies them:
//! a resource's stored configs and a requested change in, the new stored configs (or why not)
//! out. Pure, so every rule is tested here; the controller persists and publishes the result.
//!
//! The rules are Kafka's (`ConfigAdminManager`, `ControllerConfigurationValidator`), with one
//! deliberate difference: a broker resource refuses names it does not know (Kafka stores them
//! as custom properties), since a misspelt name silently stored is a setting silently ignored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::config::{
    check_dynamic_broker_config, check_topic_config, is_list_config, topic_config_default,
    ConfigError,
};
use crate::error_code::ErrorCode;

/// Kafka's ConfigResource types.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_BROKER_LOGGER: i8 = 8;

/// Kafka's AlterConfigOp types.
pub const OP_SET: i8 = 0;
pub const OP_DELETE: i8 = 1;
pub const OP_APPEND: i8 = 2;
pub const OP_SUBTRACT: i8 = 3;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(String),
    /// "" for the cluster-wide defaults, else a broker id of this node.
    Broker(String),
}

/// One IncrementalAlterConfigs operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigOp {
    pub name: String,
    pub operation: i8,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigChange {
    /// IncrementalAlterConfigs: these operations on the stored configs.
    Incremental(Vec<ConfigOp>),
    /// AlterConfigs: the stored configs become exactly these (names left out are removed).
    Replace(Vec<(String, Option<String>)>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigAlteration {
    pub resource: ConfigResource,
    pub change: ConfigChange,
}

/// The answer for one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigOutcome {
    pub error: ErrorCode,
    pub message: Option<String>,
}

impl ConfigOutcome {
    pub fn ok() -> ConfigOutcome {
        ConfigOutcome {
            error: ErrorCode::None,
            message: None,
        }
    }

    pub fn failed(error: ErrorCode, message: impl Into<String>) -> ConfigOutcome {
        ConfigOutcome {
            error,
            message: Some(message.into()),
        }
    }
}

type Refusal = (ErrorCode, String);

fn refusal(error: ConfigError) -> Refusal {
    let code = match error {
        ConfigError::NotDynamic { .. } => ErrorCode::InvalidRequest,
        _ => ErrorCode::InvalidConfig,
    };
    (code, error.to_string())
}

/// Checks one name and value for the resource's kind.
fn check(resource: &ConfigResource, name: &str, value: &str) -> Result<(), Refusal> {
    match resource {
        ConfigResource::Topic(_) => check_topic_config(name, value).map_err(|error| match error {
            ConfigError::Unknown { name } => (
                ErrorCode::InvalidConfig,
                format!("Unknown topic config name: {name}"),
            ),
            other => refusal(other),
        }),
        ConfigResource::Broker(_) => check_dynamic_broker_config(name, value).map_err(refusal),
    }
}

/// Checks that a name is one the resource may hold, whatever its value (DELETE).
fn check_name(resource: &ConfigResource, name: &str) -> Result<(), Refusal> {
    let probe = match resource {
        ConfigResource::Topic(_) => topic_config_default(name).map(str::to_string),
        ConfigResource::Broker(_) => crate::config::default_of(name),
    };
    match probe {
        Some(value) => match check(resource, name, &value) {
            // The default itself may be outside what a setting accepts; only the name matters.
            Err((ErrorCode::InvalidConfig, _)) => Ok(()),
            other => other,
        },
        None => check(resource, name, ""),
    }
}

/// The most items a list value may have: `cleanup.policy` has two possible ones, and the merge
/// below is quadratic in them.
const LIST_ITEMS_MAX: usize = 8;

/// Splits a list value (`compact,delete`) into its items, or refuses a value of more than
/// `LIST_ITEMS_MAX`.
fn items(name: &str, value: &str) -> Result<Vec<String>, Refusal> {
    let items: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .take(LIST_ITEMS_MAX + 1)
        .map(str::to_string)
        .collect();
    if items.len() > LIST_ITEMS_MAX {
        return Err((
            ErrorCode::InvalidConfig,
            format!("config {name}: a list of more than {LIST_ITEMS_MAX} items"),
        ));
    }
    Ok(items)
}

/// The stored configs after `change`, checked value by value, or why the change is refused.
/// `current` is what the resource stores now (its overrides, not the effective values).
pub fn altered(
    resource: &ConfigResource,
    current: &BTreeMap<String, String>,
    change: &ConfigChange,
) -> Result<BTreeMap<String, String>, Refusal> {
    let names: Vec<&str> = match change {
        ConfigChange::Incremental(ops) => ops.iter().map(|op| op.name.as_str()).collect(),
        ConfigChange::Replace(entries) => entries.iter().map(|(name, _)| name.as_str()).collect(),
    };
    let mut sorted = names.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err((
            ErrorCode::InvalidRequest,
            "Error due to duplicate config keys".into(),
        ));
    }
    match change {
        ConfigChange::Replace(entries) => {
            let mut next = BTreeMap::new();
            for (name, value) in entries {
                let Some(value) = value else {
                    return Err((
                        ErrorCode::InvalidRequest,
                        format!("Null value not supported for : {name}"),
                    ));
                };
                check(resource, name, value)?;
                next.insert(name.clone(), value.trim().to_string());
            }
            Ok(next)
        }
        ConfigChange::Incremental(ops) => {
            let mut next = current.clone();
            for op in ops {
                let name = &op.name;
                match (op.operation, &op.value) {
                    (OP_DELETE, _) => {
                        check_name(resource, name)?;
                        next.remove(name);
                    }
                    (OP_SET | OP_APPEND | OP_SUBTRACT, None) => {
                        return Err((
                            ErrorCode::InvalidRequest,
                            format!("Null value not supported for : {name}"),
                        ))
                    }
                    (OP_SET, Some(value)) => {
                        check(resource, name, value)?;
                        next.insert(name.clone(), value.trim().to_string());
                    }
                    (operation @ (OP_APPEND | OP_SUBTRACT), Some(value)) => {
                        let verb = if operation == OP_APPEND {
                            "APPEND"
                        } else {
                            "SUBTRACT"
                        };
                        check_name(resource, name)?;
                        if !is_list_config(name) {
                            return Err((
                                ErrorCode::InvalidConfig,
                                format!("Can't {verb} to key {name} because its type is not LIST."),
                            ));
                        }
                        // From the stored value, else the resource's own default (for a topic,
                        // Kafka's topic default, not the broker's).
                        let base = next
                            .get(name)
                            .cloned()
                            .or_else(|| topic_config_default(name).map(str::to_string))
                            .unwrap_or_else(|| "delete".to_string());
                        let mut list = items(name, &base)?;
                        if operation == OP_APPEND {
                            for item in items(name, value)? {
                                if !list.contains(&item) {
                                    list.push(item);
                                }
                            }
                        } else {
                            let removed = items(name, value)?;
                            list.retain(|item| !removed.contains(item));
                        }
                        let joined = list.join(",");
                        check(resource, name, &joined)?;
                        next.insert(name.clone(), joined);
                    }
                    (other, _) => {
                        return Err((
                            ErrorCode::InvalidRequest,
                            format!("Unknown operations type {other}"),
                        ))
                    }
                }
            }
            Ok(next)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> ConfigResource {
        ConfigResource::Topic("t".into())
    }

    fn op(name: &str, operation: i8, value: Option<&str>) -> ConfigOp {
        ConfigOp {
            name: name.into(),
            operation,
            value: value.map(str::to_string),
        }
    }

    fn stored(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn incremental_operations_set_delete_append_and_subtract() {
        let current = stored(&[("retention.ms", "1000"), ("segment.bytes", "4096")]);
        let next = altered(
            &topic(),
            &current,
            &ConfigChange::Incremental(vec![
                op("retention.ms", OP_SET, Some("2000")),
                op("segment.bytes", OP_DELETE, None),
                op("cleanup.policy", OP_APPEND, Some("compact")),
            ]),
        )
        .unwrap();
        assert_eq!(
            next,
            stored(&[
                ("retention.ms", "2000"),
                ("cleanup.policy", "delete,compact")
            ]),
            "APPEND starts from the topic default, delete"
        );
        let next = altered(
            &topic(),
            &next,
            &ConfigChange::Incremental(vec![op("cleanup.policy", OP_SUBTRACT, Some("delete"))]),
        )
        .unwrap();
        assert_eq!(next["cleanup.policy"], "compact");
    }

    #[test]
    fn alter_configs_replaces_the_whole_set() {
        let current = stored(&[("retention.ms", "1000"), ("segment.bytes", "4096")]);
        let next = altered(
            &topic(),
            &current,
            &ConfigChange::Replace(vec![("retention.bytes".into(), Some("10".into()))]),
        )
        .unwrap();
        assert_eq!(next, stored(&[("retention.bytes", "10")]));
    }

    #[test]
    fn bad_changes_are_refused_with_kafkas_codes_and_the_key_named() {
        let empty = BTreeMap::new();
        let refused = |resource: &ConfigResource, change: ConfigChange| {
            altered(resource, &empty, &change).unwrap_err()
        };
        let (code, message) = refused(
            &topic(),
            ConfigChange::Incremental(vec![op("retention.msec", OP_SET, Some("1"))]),
        );
        assert_eq!(code, ErrorCode::InvalidConfig);
        assert!(message.contains("retention.msec"), "{message}");
        let (code, message) = refused(
            &topic(),
            ConfigChange::Incremental(vec![op("retention.ms", OP_SET, Some("soon"))]),
        );
        assert_eq!(code, ErrorCode::InvalidConfig);
        assert!(message.contains("retention.ms"), "{message}");
        let (code, _) = refused(
            &topic(),
            ConfigChange::Incremental(vec![op("retention.ms", OP_APPEND, Some("5"))]),
        );
        assert_eq!(code, ErrorCode::InvalidConfig, "not a list");
        let (code, _) = refused(
            &topic(),
            ConfigChange::Incremental(vec![
                op("retention.ms", OP_SET, Some("5")),
                op("retention.ms", OP_DELETE, None),
            ]),
        );
        assert_eq!(code, ErrorCode::InvalidRequest, "duplicate keys");
        let (code, _) = refused(
            &topic(),
            ConfigChange::Incremental(vec![op("retention.ms", OP_SET, None)]),
        );
        assert_eq!(code, ErrorCode::InvalidRequest, "null value");
        let (code, _) = refused(
            &topic(),
            ConfigChange::Incremental(vec![op("retention.ms", 7, Some("5"))]),
        );
        assert_eq!(code, ErrorCode::InvalidRequest, "unknown operation");
        let (code, _) = refused(
            &topic(),
            ConfigChange::Incremental(vec![op("nonsense", OP_DELETE, None)]),
        );
        assert_eq!(code, ErrorCode::InvalidConfig, "unknown keys are refused");
        let (code, _) = refused(
            &topic(),
            ConfigChange::Incremental(vec![op("cleanup.policy", OP_SUBTRACT, Some("delete"))]),
        );
        assert_eq!(code, ErrorCode::InvalidConfig, "an empty policy is refused");
        let many = vec!["compact"; 100_000].join(",");
        let (code, _) = refused(
            &topic(),
            ConfigChange::Incremental(vec![op("cleanup.policy", OP_APPEND, Some(&many))]),
        );
        assert_eq!(code, ErrorCode::InvalidConfig, "a list too long to merge");
    }

    #[test]
    fn broker_resources_take_only_dynamic_log_defaults() {
        let broker = ConfigResource::Broker(String::new());
        let empty = BTreeMap::new();
        let next = altered(
            &broker,
            &empty,
            &ConfigChange::Incremental(vec![
                op("log.retention.ms", OP_SET, Some("60000")),
                op("log.segment.bytes", OP_SET, Some("1048576")),
            ]),
        )
        .unwrap();
        assert_eq!(next.len(), 2);
        let (code, message) = altered(
            &broker,
            &empty,
            &ConfigChange::Incremental(vec![op("log.dirs", OP_SET, Some("/x"))]),
        )
        .unwrap_err();
        assert_eq!(code, ErrorCode::InvalidRequest);
        assert!(message.contains("log.dirs"), "{message}");
        let (code, _) = altered(
            &broker,
            &empty,
            &ConfigChange::Incremental(vec![op("log.retention.hours", OP_SET, Some("1"))]),
        )
        .unwrap_err();
        assert_eq!(code, ErrorCode::InvalidRequest, "only the first synonym");
        let (code, _) = altered(
            &broker,
            &empty,
            &ConfigChange::Incremental(vec![op("log.segment.bytes", OP_SET, Some("-5"))]),
        )
        .unwrap_err();
        assert_eq!(code, ErrorCode::InvalidConfig);
        let (code, _) = altered(
            &broker,
            &empty,
            &ConfigChange::Incremental(vec![op("no.such.thing", OP_SET, Some("1"))]),
        )
        .unwrap_err();
        assert_eq!(code, ErrorCode::InvalidConfig);
        let next = altered(
            &broker,
            &next,
            &ConfigChange::Incremental(vec![op("log.retention.ms", OP_DELETE, None)]),
        )
        .unwrap();
        assert_eq!(next, stored(&[("log.segment.bytes", "1048576")]));
    }
}
