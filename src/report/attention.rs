//! The report's CLoRA section: the attention maps and masks over the steps that CLoRA images saved
//! (`save_attention = true`), at the grid seed, one entry per variant and prompt.

use super::data::ReportData;
use crate::harness::manifest::DONE;
use crate::harness::RunDir;

/// Markdown linking each saved `masks.png` / `attention.png` of a CLoRA image at `seed` (sample 0); empty when
/// there are none.
pub fn section(run: &RunDir, data: &ReportData, seed: u64) -> String {
    let mut md = String::new();
    for r in data
        .rows
        .iter()
        .filter(|r| r.kind == "clora" && r.status == DONE && r.seed == seed && r.sample == 0)
    {
        let dir = run.artifacts(&r.hash);
        let files: Vec<&str> = ["masks.png", "attention.png"]
            .into_iter()
            .filter(|f| dir.join(f).is_file())
            .collect();
        if files.is_empty() {
            continue;
        }
        md.push_str(&format!(
            "### {} — \"{}\"\n\nTensors: `artifacts/{}/attention.safetensors` (maps `[steps, branches, cells, 77]`, masks `[steps, branches, h, w]`).\n\n",
            r.variant, r.prompt_plain, r.hash
        ));
        for f in files {
            md.push_str(&format!("![{f}](../artifacts/{}/{f})\n\n", r.hash));
        }
    }
    if md.is_empty() {
        return md;
    }
    format!(
        "## CLoRA attention maps and masks at seed {seed}\n\nRows: the base branch, then each LoRA's branch; columns: denoising steps. In the mask grid the image is dimmed outside the branch's mask; in the attention grid red marks where the branch's concept tokens attend.\n\n{md}"
    )
}
