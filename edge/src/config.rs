//! The edge's configuration (`edge.toml`). Paths are relative to the file's folder.

use pointhub_client::config::HubSection;
use serde::Deserialize;
use std::path::Path;

/// A commented example; `pointhub edge --print-config` prints it.
pub const DEFAULT_TOML: &str = include_str!("../../examples/edge.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// The edge's name; its points live below `namespace` (default: the name).
    pub name: String,
    pub namespace: Option<String>,
    pub hub: HubSection,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    Simulator(SimConfig),
}

/// The simulator: `signals` points cycling through sine, ramp, random walk and on/off, plus
/// `setpoints` writable points, all under `<namespace>/<name>/`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    #[serde(default = "default_sim_name")]
    pub name: String,
    #[serde(default = "default_signals")]
    pub signals: u32,
    #[serde(default = "default_setpoints")]
    pub setpoints: u32,
    /// Updates of every signal per second.
    #[serde(default = "default_rate")]
    pub rate_hz: f64,
}

fn default_sim_name() -> String {
    "sim".into()
}
fn default_signals() -> u32 {
    8
}
fn default_setpoints() -> u32 {
    2
}
fn default_rate() -> f64 {
    2.0
}

impl EdgeConfig {
    pub fn load(path: &Path) -> Result<EdgeConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut cfg = EdgeConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        cfg.hub
            .resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<EdgeConfig, String> {
        let cfg: EdgeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn namespace(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| self.name.clone())
    }

    pub fn validate(&self) -> Result<(), String> {
        pointhub_schemas::name::validate_name(&self.namespace(), 128)
            .map_err(|e| format!("namespace: {e}"))?;
        self.hub.validate()?;
        let mut names = std::collections::HashSet::new();
        for s in &self.sources {
            match s {
                SourceConfig::Simulator(sim) => {
                    if !names.insert(sim.name.clone()) {
                        return Err(format!("sources: two sources are named {:?}", sim.name));
                    }
                    pointhub_schemas::name::validate_name(&sim.name, 64)
                        .map_err(|e| format!("sources: name: {e}"))?;
                    if !(sim.rate_hz > 0.0 && sim.rate_hz <= 1000.0) {
                        return Err(format!(
                            "sources: {}: rate_hz must be above 0 and at most 1000",
                            sim.name
                        ));
                    }
                    if sim.signals + sim.setpoints > 2_000_000 {
                        return Err(format!("sources: {}: at most 2,000,000 points", sim.name));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses() {
        EdgeConfig::parse(DEFAULT_TOML).expect("the shipped example is valid");
    }

    #[test]
    fn bad_configs_are_explained() {
        let e = EdgeConfig::parse("name = \"e\"\n[hub]\nurls = []\ncert = \"c\"\nkey = \"k\"")
            .expect_err("refused");
        assert!(e.contains("at least one hub"), "{e}");
        let e = EdgeConfig::parse(
            "name = \"e\"\n[hub]\nurls = [\"wss://h:1\"]\ncert = \"c\"\nkey = \"k\"",
        )
        .expect_err("refused");
        assert!(e.contains("fingerprint"), "{e}");
        let e = EdgeConfig::parse(
            "name = \"e\"\n[hub]\nurls = [\"wss://h:1\"]\nfingerprint = \"sha256:00\"\ncert = \"c\"\nkey = \"k\"",
        )
        .expect_err("refused");
        assert!(e.contains("not a fingerprint"), "{e}");
    }
}
