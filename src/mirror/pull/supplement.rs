//! The digests a fill leaves for later: sha384 and sha512, hashed from the spool at the lowest
//! priority and recorded as a supplement to the same ingest.

use std::sync::Arc;

use super::fill::Fill;
use crate::mirror::ledger::Ledger;
use crate::mirror::record::{BlobRecord, Record};
use crate::registry::{Algorithm, Integrity};

/// Provenance carries sha256, sha384 and sha512. Only sha256 (and the algorithm of a known
/// integrity) is computed on the transfer's critical path; the others are computed from
/// the spool afterwards and recorded as a supplement to the same ingest.
pub(super) fn complete_integrity(
    ledger: Arc<Ledger>,
    background: &tokio::runtime::Handle,
    fill: Arc<Fill>,
    record: BlobRecord,
) {
    background.spawn(async move {
        let Some(file) = fill.spool().map(|s| s.file().clone()) else {
            return;
        };
        // About 2.5 CPU seconds per GB: on a thread of its own at the lowest priority, so
        // it only ever takes CPU that serving requests leaves idle.
        let hashed = crate::tasks::spawn_idle(
            "gf-supplement",
            move || -> std::io::Result<(Vec<u8>, Vec<u8>)> {
                use sha2::Digest as _;
                use std::os::unix::fs::FileExt as _;
                let (mut h384, mut h512) = (sha2::Sha384::new(), sha2::Sha512::new());
                let mut buf = vec![0u8; 1 << 20];
                let mut pos = 0u64;
                loop {
                    let n = file.read_at(&mut buf, pos)?;
                    if n == 0 {
                        break;
                    }
                    pos += n as u64;
                    h384.update(&buf[..n]);
                    h512.update(&buf[..n]);
                }
                Ok((h384.finalize().to_vec(), h512.finalize().to_vec()))
            },
        )
        .await;
        let Ok(Ok((d384, d512))) = hashed else {
            tracing::warn!(blob.sha256 = %record.sha256, "could not complete sha384/sha512 provenance");
            return;
        };
        let mut full = record;
        full.supplement = true;
        for i in [
            Integrity::of_digest(Algorithm::Sha384, d384),
            Integrity::of_digest(Algorithm::Sha512, d512),
        ] {
            let s = i.to_string();
            if !full.integrity.contains(&s) {
                full.integrity.push(s);
            }
        }
        // Same ingest time: the supplement folds right after the original record.
        let supplement = Record::Blob(full);
        if let Err(e) = ledger.record(&supplement).await {
            tracing::warn!(error = %e, "could not record sha384/sha512 provenance");
            return;
        }
        drop(fill);
    });
}
