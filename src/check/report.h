// Report renderers. They read only the records (RunRecords from results.jsonl) and write files;
// nothing here looks at the clock or the live run, so `vlmcheck report --from results.jsonl`
// reproduces every report byte for byte. Each renderer is isolated: one failing does not stop the
// others (the failure is returned as a warning).
#pragma once

#include <string>
#include <vector>

#include "check/record.h"

namespace vlm::check {

// Artefact names → paths relative to the output dir (the defaults of check_models §5, renamed).
Json default_output_files();
std::string output_file(const RunRecords& run, const std::string& key);  // relative path for key

struct RenderResult {
  std::vector<std::string> written;   // paths written
  std::vector<std::string> warnings;  // renderers that failed, with why
};

// Writes index.md, run.json, reports/{results.html, model_gallery.md, diagnostics.md},
// results.tsv, reports/assets/source-image.jpg and issues/* into `output_dir`.
RenderResult render_reports(const RunRecords& run, const std::string& output_dir);

// Individual renderers (strings), for tests and for the writer above.
std::string render_index_md(const RunRecords& run);
std::string render_gallery_md(const RunRecords& run, bool have_preview);
std::string render_diagnostics_md(const RunRecords& run);
std::string render_results_html(const RunRecords& run, const std::string& preview_jpeg);
std::string render_results_tsv(const RunRecords& run);
std::string render_run_json(const RunRecords& run);
std::string render_run_issue_md(const RunRecords& run);      // "" when nothing needs review
std::string render_crash_issue_md(const RunRecords& run, const ModelResult& r);
// One history line for results.history.jsonl (format 1.0).
Json history_record(const RunRecords& run);

// The bounded preview (≤ 1024 px, JPEG) of the run's image, or "" when the file is gone or its
// SHA-256 no longer matches the record.
std::string make_preview_jpeg(const RunRecords& run);

}  // namespace vlm::check
