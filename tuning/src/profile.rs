//! Tuning profiles: TOML files naming the knobs a host should have, the broker's cores, and what
//! the broker does when a preflight check fails. The three built-in profiles are compiled in;
//! a path to any TOML file works too. A profile may `include` another and override its knobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::knobs::knob_spec;

/// How much a knob or check matters: `check` exits non-zero only when a fatal one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warn,
    Fatal,
}

fn warn() -> Severity {
    Severity::Warn
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KnobSetting {
    pub want: String,
    #[serde(default = "warn")]
    pub severity: Severity,
}

/// What `broker start` does when a fatal preflight check fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPreflightFailure {
    Refuse,
    Warn,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    description: Option<String>,
    include: Option<String>,
    preflight: Option<OnPreflightFailure>,
    cores: Option<String>,
    #[serde(default)]
    knobs: BTreeMap<String, KnobSetting>,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// The broker's cores (a core list such as `2-15`); `None` means every allowed core.
    pub cores: Option<String>,
    pub preflight: OnPreflightFailure,
    pub knobs: BTreeMap<String, KnobSetting>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("no profile {name:?}: not a built-in ({}) and not a readable file", BUILT_IN.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", "))]
    NotFound { name: String },
    #[error("profile {name}: {reason}")]
    Invalid { name: String, reason: String },
}

/// The built-in profiles, by name.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("dev", include_str!("../profiles/dev.toml")),
    ("production", include_str!("../profiles/production.toml")),
    ("low-latency", include_str!("../profiles/low-latency.toml")),
];

/// Profiles may include each other this deep, which catches include cycles.
const INCLUDE_DEPTH_MAX: usize = 8;

fn source(name: &str) -> Result<String, ProfileError> {
    if let Some((_, text)) = BUILT_IN.iter().find(|(built_in, _)| *built_in == name) {
        return Ok(text.to_string());
    }
    std::fs::read_to_string(name).map_err(|_| ProfileError::NotFound {
        name: name.to_string(),
    })
}

/// Loads a built-in profile by name, or a profile file by path, with its includes resolved.
pub fn load(name: &str) -> Result<Profile, ProfileError> {
    load_at_depth(name, 0)
}

fn load_at_depth(name: &str, depth: usize) -> Result<Profile, ProfileError> {
    let invalid = |reason: String| ProfileError::Invalid {
        name: name.to_string(),
        reason,
    };
    if depth > INCLUDE_DEPTH_MAX {
        return Err(invalid("includes nest too deep (a cycle?)".into()));
    }
    let file: ProfileFile =
        toml::from_str(&source(name)?).map_err(|error| invalid(error.to_string()))?;
    for (knob, setting) in &file.knobs {
        let spec = knob_spec(knob).ok_or_else(|| invalid(format!("unknown knob {knob:?}")))?;
        spec.validate_want(&setting.want)
            .map_err(|reason| invalid(format!("knob {knob}: {reason}")))?;
    }
    let mut profile = match &file.include {
        Some(parent) => load_at_depth(parent, depth + 1)?,
        None => Profile {
            name: String::new(),
            description: String::new(),
            cores: None,
            preflight: OnPreflightFailure::Warn,
            knobs: BTreeMap::new(),
        },
    };
    profile.name = name.to_string();
    profile.description = file.description.unwrap_or_default();
    if file.cores.is_some() {
        profile.cores = file.cores;
    }
    if let Some(preflight) = file.preflight {
        profile.preflight = preflight;
    }
    profile.knobs.extend(file.knobs);
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_load_and_low_latency_includes_production() {
        let dev = load("dev").unwrap();
        assert!(dev.knobs.is_empty());
        assert_eq!(dev.preflight, OnPreflightFailure::Warn);
        let production = load("production").unwrap();
        assert_eq!(production.preflight, OnPreflightFailure::Refuse);
        let low_latency = load("low-latency").unwrap();
        for knob in production.knobs.keys() {
            assert!(low_latency.knobs.contains_key(knob), "{knob} not inherited");
        }
        assert!(low_latency.knobs.contains_key("boot.nohz_full"));
    }

    #[test]
    fn bad_profiles_are_refused_with_a_reason() {
        let directory = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = directory.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let unknown = write("a.toml", "[knobs]\n\"disk.warp\" = { want = \"9\" }\n");
        assert!(load(&unknown)
            .unwrap_err()
            .to_string()
            .contains("unknown knob"));
        let bad_value = write(
            "b.toml",
            "[knobs]\n\"vm.swappiness\" = { want = \"lots\" }\n",
        );
        assert!(load(&bad_value)
            .unwrap_err()
            .to_string()
            .contains("vm.swappiness"));
        let cycle = directory.path().join("c.toml");
        std::fs::write(
            &cycle,
            format!("include = {:?}\n", cycle.display().to_string()),
        )
        .unwrap();
        assert!(load(&cycle.display().to_string())
            .unwrap_err()
            .to_string()
            .contains("cycle"));
        assert!(matches!(
            load("nonesuch"),
            Err(ProfileError::NotFound { .. })
        ));
        let custom = write("d.toml", "include = \"dev\"\ncores = \"1\"\n[knobs]\n\"vm.swappiness\" = { want = \"10\", severity = \"fatal\" }\n");
        let custom = load(&custom).unwrap();
        assert_eq!(custom.cores.as_deref(), Some("1"));
        assert_eq!(custom.knobs["vm.swappiness"].severity, Severity::Fatal);
    }
}
