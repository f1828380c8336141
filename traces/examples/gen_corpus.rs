//! Writes the golden traces into `traces/corpus/` (run from the repository root:
//! `cargo run -p traces --example gen_corpus`). The corpus is committed; regenerate it only
//! when adding a file, never to "fix" a compatibility test.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    std::fs::create_dir_all(&dir)?;
    for g in traces::synth::golden() {
        let path = dir.join(format!("{}.{}", g.name, traces::EXTENSION));
        let bytes = g.write()?;
        std::fs::write(&path, &bytes)?;
        println!("{}: {} bytes", path.display(), bytes.len());
    }
    Ok(())
}
