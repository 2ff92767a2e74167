//! The edge's configuration (`edge.toml`). Paths are relative to the file's folder.

use pointhub_link::config::{HubSection, SectionError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// An edge configuration that cannot be used: the file, and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// The text is not TOML, has an unknown key, or a value of the wrong type.
    #[error("{}{source}", in_file(.path))]
    Parse {
        /// The configuration file; `None` for a text parsed without one (`EdgeConfig::parse`).
        path: Option<PathBuf>,
        /// The TOML error, with its line.
        source: toml::de::Error,
    },
    /// The `[hub]` section does not check out.
    #[error("{}{source}", in_file(.path))]
    Hub {
        /// The configuration file; `None` for a text parsed without one (`EdgeConfig::parse`).
        path: Option<PathBuf>,
        /// What is wrong with the section.
        source: SectionError,
    },
    /// A name, a source's settings or a register map point is not valid.
    #[error("{}{message}", in_file(.path))]
    Invalid {
        /// The configuration file; `None` for a text parsed without one (`EdgeConfig::parse`).
        path: Option<PathBuf>,
        /// What to change; for a register map point, with its line.
        message: String,
    },
}

fn in_file(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

impl ConfigError {
    fn in_file(self, file: &Path) -> ConfigError {
        let path = Some(file.to_path_buf());
        match self {
            ConfigError::Parse { source, .. } => ConfigError::Parse { path, source },
            ConfigError::Hub { source, .. } => ConfigError::Hub { path, source },
            ConfigError::Invalid { message, .. } => ConfigError::Invalid { path, message },
            other => other,
        }
    }
}

fn invalid(message: String) -> ConfigError {
    ConfigError::Invalid {
        path: None,
        message,
    }
}

/// A commented example; `pointhub edge --print-config` prints it.
pub const DEFAULT_TOML: &str = include_str!("../../examples/edge.toml");

/// An edge's configuration, as read from `edge.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// The edge's name; its points live below `namespace` (default: the name).
    pub name: String,
    /// Where the edge's points live; `None` means the edge's name (see [`EdgeConfig::namespace`]).
    pub namespace: Option<String>,
    /// The `[hub]` section: where the hub is, how to check it, and the edge's own key.
    pub hub: HubSection,
    /// Store-and-forward while the hub is unreachable; on by default.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// Where points come from (`[[sources]]`): simulators and Modbus devices; none by default.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

/// Store-and-forward while the hub is unreachable.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Whether updates made while the hub is unreachable are kept on disk; `true` by default.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Folder of the on-disk buffer (default `edge-data/<name>` beside the config file).
    pub dir: Option<std::path::PathBuf>,
    /// Size of the buffer; past it the oldest updates are dropped (and counted).
    #[serde(default = "default_buffer_bytes")]
    pub max_bytes: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            enabled: true,
            dir: None,
            max_bytes: default_buffer_bytes(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_buffer_bytes() -> u64 {
    256 << 20
}

/// One `[[sources]]` entry, chosen by its `kind`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// `kind = "simulator"`: generated signals and writable setpoints.
    Simulator(SimConfig),
    /// `kind = "modbus"`: a Modbus device, polled over TCP or a serial line.
    Modbus(ModbusConfig),
    /// `kind = "mqtt"`: an MQTT broker; each point is the latest message on its topic.
    Mqtt(crate::mqtt_config::MqttConfig),
    /// `kind = "opcua"`: a device's or a PLC's OPC UA server; each point is a node.
    Opcua(pointhub_opcua::OpcUaConfig),
}

/// How a Modbus device is reached (`transport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Modbus TCP to `host` and `port` (the default).
    #[default]
    Tcp,
    /// Modbus RTU over the serial `device`.
    Rtu,
}

/// A Modbus device: its transport, timing, and register map. Points are named
/// `<namespace>/<name>/<point name>`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// The device's name: unique among the edge's sources, and part of its points' names.
    pub name: String,
    /// How the device is reached; `tcp` by default.
    #[serde(default)]
    pub transport: Transport,
    /// TCP: the device's host and port (default 502).
    pub host: Option<String>,
    /// The device's TCP port; `None` means 502.
    pub port: Option<u16>,
    /// RTU: the serial device, baud rate, parity (`none`, `even`, `odd`) and stop bits (1 or 2).
    pub device: Option<String>,
    /// RTU baud rate; `None` means 9600.
    pub baud: Option<u32>,
    /// RTU parity: `none`, `even` or `odd`; `None` means none.
    pub parity: Option<String>,
    /// RTU stop bits: 1 or 2; `None` means 1.
    pub stop_bits: Option<u8>,
    /// Unit (slave) id.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Time one request may take.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Retries of a failed read before the device counts as unreachable.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Unmapped registers (or bits) a block read may bridge to merge two reads into one.
    #[serde(default = "default_gap")]
    pub max_gap: u16,
    /// Poll period of the `default` group.
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    /// Other poll groups: name = period in ms (`fast = 200`).
    #[serde(default)]
    pub groups: std::collections::BTreeMap<String, u64>,
    /// The register map: one entry per point; none by default.
    #[serde(default)]
    pub points: Vec<pointhub_modbus_map::MapEntry>,
}

fn default_unit() -> u8 {
    1
}
fn default_timeout() -> u64 {
    1000
}
fn default_retries() -> u32 {
    1
}
fn default_gap() -> u16 {
    8
}
fn default_poll() -> u64 {
    1000
}

/// The simulator: `signals` points cycling through sine, ramp, random walk and on/off, plus
/// `setpoints` writable points, all under `<namespace>/<name>/`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The source's name, part of its points' names; `sim` by default.
    #[serde(default = "default_sim_name")]
    pub name: String,
    /// How many generated signals; 8 by default.
    #[serde(default = "default_signals")]
    pub signals: u32,
    /// How many writable setpoints (`setpoint1`, …); 2 by default.
    #[serde(default = "default_setpoints")]
    pub setpoints: u32,
    /// Updates of every signal per second.
    #[serde(default = "default_rate")]
    pub rate_hz: f64,
    /// Also publish `tick`, a counter that steps by one on every tick (to check sequences).
    #[serde(default)]
    pub tick: bool,
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
    /// Reads and checks a configuration file; relative paths are made relative to its folder.
    pub fn load(path: &Path) -> Result<EdgeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = EdgeConfig::parse(&text).map_err(|e| e.in_file(path))?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.hub.resolve_paths(base);
        for s in &mut cfg.sources {
            match s {
                SourceConfig::Mqtt(m) => m.broker.resolve_paths(base),
                SourceConfig::Opcua(u) => u.resolve_paths(base),
                _ => {}
            }
        }
        let dir = cfg
            .buffer
            .dir
            .clone()
            .unwrap_or_else(|| Path::new("edge-data").join(&cfg.name));
        cfg.buffer.dir = Some(if dir.is_relative() {
            base.join(dir)
        } else {
            dir
        });
        Ok(cfg)
    }

    /// Parses and checks a configuration text.
    pub fn parse(text: &str) -> Result<EdgeConfig, ConfigError> {
        let cfg: EdgeConfig =
            toml::from_str(text).map_err(|source| ConfigError::Parse { path: None, source })?;
        cfg.validate()?;
        cfg.validate_modbus(text).map_err(invalid)?;
        Ok(cfg)
    }

    /// Checks every register map; errors name the line of the point.
    fn validate_modbus(&self, text: &str) -> Result<(), String> {
        use pointhub_modbus_map::{check_overlaps, line_of};
        // A second, lenient read of the same text finds each point's line.
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            sources: Vec<ProbeSource>,
        }
        #[derive(Deserialize)]
        struct ProbeSource {
            #[serde(default)]
            points: Vec<toml::Spanned<toml::Value>>,
        }
        let probe: Option<Probe> = toml::from_str(text).ok();
        let line_at = |si: usize, pi: usize| {
            probe
                .as_ref()
                .and_then(|p| p.sources.get(si))
                .and_then(|s| s.points.get(pi))
                .map(|sp| line_of(text, sp.span().start))
                .unwrap_or(0)
        };
        for (si, s) in self.sources.iter().enumerate() {
            let SourceConfig::Modbus(m) = s else { continue };
            let dev = &m.name;
            match m.transport {
                Transport::Tcp if m.host.as_deref().unwrap_or("").is_empty() => {
                    return Err(format!(
                        "sources: modbus {dev:?}: transport tcp needs host = \"…\""
                    ))
                }
                Transport::Rtu if m.device.as_deref().unwrap_or("").is_empty() => {
                    return Err(format!(
                        "sources: modbus {dev:?}: transport rtu needs device = \"/dev/ttyUSB0\""
                    ))
                }
                _ => {}
            }
            if let Some(p) = m.parity.as_deref() {
                if !["none", "even", "odd"].contains(&p) {
                    return Err(format!(
                        "sources: modbus {dev:?}: parity must be none, even or odd"
                    ));
                }
            }
            if m.stop_bits.is_some_and(|b| b != 1 && b != 2) {
                return Err(format!("sources: modbus {dev:?}: stop_bits must be 1 or 2"));
            }
            if m.timeout_ms == 0 || m.poll_ms == 0 || m.groups.values().any(|p| *p == 0) {
                return Err(format!(
                    "sources: modbus {dev:?}: timeout_ms and poll periods must be above 0"
                ));
            }
            let mut names = std::collections::HashSet::new();
            let mut labelled = Vec::new();
            for (pi, e) in m.points.iter().enumerate() {
                let line = line_at(si, pi);
                let at =
                    |why: String| format!("line {line}: modbus {dev:?} point {:?}: {why}", e.name);
                pointhub_schemas::name::validate_name(&e.name, 128)
                    .map_err(|er| at(er.to_string()))?;
                e.validate().map_err(|er| at(er.to_string()))?;
                if e.quality_register.is_some() {
                    return Err(at(
                        "quality_register belongs to a client's Modbus server, not an edge".into(),
                    ));
                }
                if let Some(g) = &e.group {
                    if g != "default" && !m.groups.contains_key(g) {
                        return Err(at(format!(
                            "group {g:?} is not defined: add {g} = <ms> under groups"
                        )));
                    }
                }
                if !names.insert(e.name.clone()) {
                    return Err(at("the name is used twice".into()));
                }
                labelled.push((format!("line {line}: point {:?}", e.name), e.mapping()));
            }
            let refs: Vec<(String, &pointhub_modbus_map::Mapping)> =
                labelled.iter().map(|(l, m)| (l.clone(), m)).collect();
            check_overlaps(&refs).map_err(|e| format!("modbus {dev:?}: {e}"))?;
        }
        Ok(())
    }

    /// Where the edge's points live: `namespace` if set, else the edge's name.
    pub fn namespace(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| self.name.clone())
    }

    /// Checks everything but the register maps' lines (which need the text).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.hub
            .validate()
            .map_err(|source| ConfigError::Hub { path: None, source })?;
        self.check().map_err(invalid)
    }

    fn check(&self) -> Result<(), String> {
        pointhub_schemas::name::validate_name(&self.namespace(), 128)
            .map_err(|e| format!("namespace: {e}"))?;
        let mut names = std::collections::HashSet::new();
        for s in &self.sources {
            match s {
                SourceConfig::Modbus(m) => {
                    if !names.insert(m.name.clone()) {
                        return Err(format!("sources: two sources are named {:?}", m.name));
                    }
                    pointhub_schemas::name::validate_name(&m.name, 64)
                        .map_err(|e| format!("sources: name: {e}"))?;
                }
                SourceConfig::Mqtt(m) => {
                    if !names.insert(m.name.clone()) {
                        return Err(format!("sources: two sources are named {:?}", m.name));
                    }
                    pointhub_schemas::name::validate_name(&m.name, 64)
                        .map_err(|e| format!("sources: name: {e}"))?;
                    m.validate().map_err(|e| e.to_string())?;
                    for p in &m.points {
                        pointhub_schemas::name::validate_name(&p.name, 128)
                            .map_err(|e| format!("sources: mqtt {:?}: point name: {e}", m.name))?;
                    }
                }
                SourceConfig::Opcua(u) => {
                    if !names.insert(u.name.clone()) {
                        return Err(format!("sources: two sources are named {:?}", u.name));
                    }
                    pointhub_schemas::name::validate_name(&u.name, 64)
                        .map_err(|e| format!("sources: name: {e}"))?;
                    u.validate().map_err(|e| e.to_string())?;
                    for p in &u.points {
                        pointhub_schemas::name::validate_name(&p.name, 128)
                            .map_err(|e| format!("sources: opcua {:?}: point name: {e}", u.name))?;
                    }
                }
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
    fn examples_parse() {
        EdgeConfig::parse(DEFAULT_TOML).expect("the shipped example is valid");
        EdgeConfig::parse(include_str!("../../examples/modbus/edge.toml"))
            .expect("the Modbus example is valid");
        EdgeConfig::parse(include_str!("../../examples/mqtt/edge.toml"))
            .expect("the MQTT example is valid");
        EdgeConfig::parse(include_str!("../../examples/opcua/edge.toml"))
            .expect("the OPC UA example is valid");
    }

    #[test]
    fn opcua_sources_are_checked_and_say_what_to_write() {
        let ok = format!("{HUB}[[sources]]\nkind = \"opcua\"\nname = \"plc\"\nendpoint = \"opc.tcp://10.0.0.5:4840/\"\n[[sources.points]]\nname = \"a\"\nnode = \"ns=2;s=A\"\ntype = \"float\"\n");
        EdgeConfig::parse(&ok).expect("valid");
        for (bad, says) in [
            (
                ok.replace("opc.tcp://10.0.0.5:4840/", "http://x"),
                "write opc.tcp://host:port/path",
            ),
            (ok.replace("ns=2;s=A", "tank"), "write a node id such as"),
            (
                ok.replace("name = \"plc\"\n", "name = \"plc\"\nuser = \"u\"\n"),
                "user and password_file go together",
            ),
            (
                ok.replace(
                    "name = \"plc\"\n",
                    "name = \"plc\"\nsecurity = \"basic128\"\n",
                ),
                "basic128",
            ),
            (
                ok.replace("name = \"plc\"\n", "name = \"plc\"\npublishing_ms = 0\n"),
                "publishing_ms = 0",
            ),
            (format!("{ok}deadband = -1.0\n"), "deadband -1"),
            (format!("{ok}colour = 1\n"), "colour"),
        ] {
            let e = EdgeConfig::parse(&bad).expect_err(says).to_string();
            assert!(e.contains(says), "{says}: {e}");
        }
    }

    const HUB: &str = "name = \"e\"\n[hub]\nurls = [\"wss://h:1\"]\nfingerprint = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\ncert = \"c\"\nkey = \"k\"\n";

    #[test]
    fn modbus_maps_are_checked_with_their_line() {
        let ok = format!("{HUB}[[sources]]\nkind = \"modbus\"\nname = \"plc\"\nhost = \"127.0.0.1\"\n[[sources.points]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\ntype = \"f32\"\n");
        EdgeConfig::parse(&ok).expect("valid");
        let overlap = format!("{ok}[[sources.points]]\nname = \"b\"\ntable = \"holding\"\naddress = 1\ntype = \"u16\"\n");
        let e = EdgeConfig::parse(&overlap)
            .expect_err("overlap")
            .to_string();
        assert!(e.contains("overlaps") && e.contains("line 16"), "{e}");
        let badtype = ok.replace("\"f32\"", "\"f33\"");
        assert!(EdgeConfig::parse(&badtype)
            .expect_err("type")
            .to_string()
            .contains("f33"));
        let badorder = format!("{ok}order = \"ABDC\"\n");
        assert!(EdgeConfig::parse(&badorder).is_err());
        let range = ok.replace("address = 0", "address = 65535");
        let e = EdgeConfig::parse(&range).expect_err("range").to_string();
        assert!(e.contains("line 11") && e.contains("65535"), "{e}");
        let ro = format!(
            "{}writable = true\n",
            ok.replace("\"holding\"", "\"input\"")
        );
        assert!(EdgeConfig::parse(&ro)
            .expect_err("input not writable")
            .to_string()
            .contains("cannot be written"));
    }

    #[test]
    fn bad_configs_are_explained() {
        let e = EdgeConfig::parse("name = \"e\"\n[hub]\nurls = []\ncert = \"c\"\nkey = \"k\"")
            .expect_err("refused");
        assert!(matches!(e, ConfigError::Hub { .. }), "{e:?}");
        assert!(e.to_string().contains("at least one hub"), "{e}");
        let e = EdgeConfig::parse(
            "name = \"e\"\n[hub]\nurls = [\"wss://h:1\"]\ncert = \"c\"\nkey = \"k\"",
        )
        .expect_err("refused")
        .to_string();
        assert!(e.contains("fingerprint"), "{e}");
        let e = EdgeConfig::parse(
            "name = \"e\"\n[hub]\nurls = [\"wss://h:1\"]\nfingerprint = \"sha256:00\"\ncert = \"c\"\nkey = \"k\"",
        )
        .expect_err("refused")
        .to_string();
        assert!(e.contains("not a fingerprint"), "{e}");
    }
}
