//! The OPC UA source on the edge's seam: its points, and the UA client of `pointhub_opcua`
//! whose changes become [`Sample`]s and whose writes are the points' writes.

use super::{Sample, Source, SourceContext, SourceHandle, SourceWrite};
use pointhub_opcua::{Change, OpcUaConfig, Write};
use pointhub_schemas::PointDef;
use tokio::sync::mpsc;

impl Source for OpcUaConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&self, ctx: SourceContext) -> SourceHandle {
        let points: Vec<PointDef> = self
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| PointDef {
                id: ctx.base + i as u32,
                name: format!("{}/{}/{}", ctx.namespace, self.name, p.name),
                dtype: p.dtype,
                unit: p.unit.clone(),
                description: p.description.clone(),
                writable: p.writable,
            })
            .collect();
        let (wtx, mut wrx) = mpsc::channel::<SourceWrite>(64);
        let (ua_wtx, ua_wrx) = mpsc::channel::<Write>(64);
        let (ctx_tx, mut changes) = mpsc::channel::<Vec<Change>>(64);
        let base = ctx.base;
        tokio::spawn(pointhub_opcua::run(
            self.clone(),
            ctx.edge.clone(),
            ctx_tx,
            ua_wrx,
            ctx.shutdown.clone(),
        ));
        // Changes become samples with the edge's ids; writes go the other way.
        let samples = ctx.samples;
        tokio::spawn(async move {
            while let Some(batch) = changes.recv().await {
                let out: Vec<Sample> = batch
                    .into_iter()
                    .map(|c| Sample {
                        id: base + c.index as u32,
                        value: c.value,
                        quality: c.quality,
                        ts: c.ts,
                    })
                    .collect();
                if samples.send(out).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(w) = wrx.recv().await {
                let Some(index) = w.id.checked_sub(base) else {
                    continue;
                };
                let write = Write {
                    index: index as usize,
                    value: w.value,
                    reply: w.reply,
                };
                if ua_wtx.send(write).await.is_err() {
                    return;
                }
            }
        });
        SourceHandle {
            points,
            writes: wtx,
        }
    }
}
