//! The edge's point table: every point its sources own, then the edge's own `$sys` status points,
//! each with its latest value, quality and source time; and the birth that carries it to a hub.

use crate::config::EdgeConfig;
use crate::sources::{Sample, SourceContext, SourceWrite};
use pointhub_schemas::sys::{self, SysNamespace};
use pointhub_schemas::{Birth, DataType, PointDef, Quality, Timestamp, Update, Value};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Points per birth part.
const BIRTH_PART: usize = 8192;

/// One point's latest state.
struct State {
    def: PointDef,
    value: Value,
    quality: Quality,
    ts: Timestamp,
    /// Which source owns it (index into the sources' write channels); `usize::MAX` for `$sys`.
    source: usize,
}

/// The ids of the edge's own status points.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StatusIds {
    pub queued: u32,
    pub dropped: u32,
    pub hub: u32,
    pub rtt_ms: u32,
}

/// Where a write from the hub goes, or why it goes nowhere.
pub(crate) enum WriteTarget {
    Source(u32, mpsc::Sender<SourceWrite>),
    Refused(Quality, String),
}

pub(crate) struct Points {
    states: Vec<State>,
    by_name: HashMap<String, u32>,
    writers: Vec<mpsc::Sender<SourceWrite>>,
    pub status: StatusIds,
}

impl Points {
    /// Starts every configured source, numbering their points in order, and adds the status
    /// points. Samples arrive on the receiver returned.
    pub(crate) fn start(
        cfg: &EdgeConfig,
        shutdown: &CancellationToken,
    ) -> (Points, mpsc::Receiver<Vec<Sample>>) {
        let (samples, rx) = mpsc::channel::<Vec<Sample>>(1024);
        let mut states: Vec<State> = Vec::new();
        let mut writers = Vec::new();
        for (i, src) in cfg.sources.iter().enumerate() {
            let handle = src.source().start(SourceContext {
                edge: cfg.name.clone(),
                namespace: cfg.namespace(),
                base: states.len() as u32,
                samples: samples.clone(),
                shutdown: shutdown.clone(),
            });
            for def in handle.points {
                states.push(State {
                    def,
                    value: Value::Null,
                    quality: Quality::BadWaitingForInitialData,
                    ts: Timestamp::NEVER,
                    source: i,
                });
            }
            writers.push(handle.writes);
        }
        let base = states.len() as u32;
        for (i, (k, dtype)) in [
            ("buffer/queued", DataType::UInt),
            ("buffer/dropped", DataType::UInt),
            ("link/hub", DataType::String),
            ("link/rtt_ms", DataType::Float),
        ]
        .into_iter()
        .enumerate()
        {
            states.push(State {
                def: PointDef {
                    id: base + i as u32,
                    name: SysNamespace::of(&cfg.name).point(k),
                    dtype,
                    unit: None,
                    description: None,
                    writable: false,
                },
                value: Value::Null,
                quality: Quality::Good,
                ts: Timestamp::now(),
                source: usize::MAX,
            });
        }
        let by_name = states
            .iter()
            .map(|s| (s.def.name.clone(), s.def.id))
            .collect();
        let status = StatusIds {
            queued: base,
            dropped: base + 1,
            hub: base + 2,
            rtt_ms: base + 3,
        };
        let points = Points {
            states,
            by_name,
            writers,
            status,
        };
        (points, rx)
    }

    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    /// Applies samples to the table and appends the updates they make to `out`.
    pub(crate) fn apply(&mut self, batch: Vec<Sample>, out: &mut Vec<Update>) {
        for s in batch {
            let Some(st) = self.states.get_mut(s.id as usize) else {
                continue;
            };
            st.value = s.value.clone();
            st.quality = s.quality;
            st.ts = s.ts;
            out.push(Update {
                id: s.id,
                value: s.value,
                quality: s.quality,
                source_ts: s.ts,
                hub_ts: Timestamp::NEVER,
                flags: 0,
            });
        }
    }

    /// Sets good status points now; returns their updates.
    pub(crate) fn set_status(&mut self, values: &[(u32, Value)]) -> Vec<Update> {
        let now = Timestamp::now();
        let batch = values
            .iter()
            .map(|(id, value)| Sample {
                id: *id,
                value: value.clone(),
                quality: Quality::Good,
                ts: now,
            })
            .collect();
        let mut out = Vec::new();
        self.apply(batch, &mut out);
        out
    }

    /// Whether an update is of the edge's own `$sys` points (never buffered: they describe now).
    pub(crate) fn is_sys(&self, u: &Update) -> bool {
        self.states
            .get(u.id as usize)
            .is_some_and(|s| sys::is_sys(&s.def.name))
    }

    /// The name of point `id`.
    pub(crate) fn name_of(&self, id: u32) -> Option<&str> {
        self.states.get(id as usize).map(|s| s.def.name.as_str())
    }

    /// The number of the point named `name`, in this run's table.
    pub(crate) fn id_of(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// Whether the table holds exactly this update's source time for its point (the birth carried
    /// it live, so a replay of it would be a double).
    pub(crate) fn is_latest(&self, u: &Update) -> bool {
        self.states
            .get(u.id as usize)
            .is_some_and(|st| st.ts == u.source_ts)
    }

    /// Where a write to `point` goes.
    pub(crate) fn write_target(&self, point: &str) -> WriteTarget {
        let Some(&id) = self.by_name.get(point) else {
            return WriteTarget::Refused(
                Quality::BadNodeIdUnknown,
                format!("edge has no point {point:?}"),
            );
        };
        let st = &self.states[id as usize];
        match self.writers.get(st.source) {
            Some(tx) if st.def.writable => WriteTarget::Source(id, tx.clone()),
            _ => WriteTarget::Refused(
                Quality::BadNotWritable,
                format!("point {point:?} is not writable"),
            ),
        }
    }

    /// The birth of every point with its latest state, in parts.
    pub(crate) fn birth(&self, seq: u64) -> Vec<Birth> {
        let parts: Vec<&[State]> = if self.states.is_empty() {
            vec![&[]]
        } else {
            self.states.chunks(BIRTH_PART).collect()
        };
        let n = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| Birth {
                seq,
                part: i as u32,
                last: i + 1 == n,
                points: part.iter().map(|s| s.def.clone()).collect(),
                states: part
                    .iter()
                    .map(|s| Update {
                        id: s.def.id,
                        value: s.value.clone(),
                        quality: s.quality,
                        source_ts: s.ts,
                        hub_ts: Timestamp::NEVER,
                        flags: 0,
                    })
                    .collect(),
            })
            .collect()
    }
}
