// The checker's pure parts: lanes and verbatim prompts, the output detectors and the three-axis
// assessment, failure signatures, the TOML quality config, SHA-256 (FIPS vectors and coreutils),
// and the JSONL record round trip.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

#include "check/analysis.h"
#include "check/assessment.h"
#include "check/prompts.h"
#include "check/quality.h"
#include "check/record.h"
#include "check/sha256.h"
#include "check/text_util.h"
#include "core/error.h"
#include "support/test_support.h"

namespace vlm::check {
namespace {

ImageMetadata described() {
  ImageMetadata md;
  md.title = ",  Seafront,   at dusk ";
  md.description = "Boats moored\nin the harbour.";
  md.keyword_list = {"boat", "Harbour", "BOAT", "sea"};
  md.keywords = "boat, Harbour, BOAT, sea";
  md.date = "2026-08-13 17:14:49 UTC+01:00";
  md.time = "17:14:49";
  md.gps = "51.959333\u00b0N, 1.349050\u00b0E";
  return md;
}

TEST(CheckPrompts, LanesResolveAsCheckModels) {
  QualityThresholds q;
  ImageMetadata none;
  EXPECT_EQ(plan_prompt("auto", none, std::nullopt, Json(), q).lane, Lane::kBlind);
  EXPECT_EQ(plan_prompt("auto", described(), std::nullopt, Json(), q).lane, Lane::kAssisted);
  auto triage = plan_prompt("triage", described(), std::nullopt, Json(), q);
  EXPECT_EQ(triage.prompt, "Describe this image briefly.");
  EXPECT_EQ(triage.default_max_tokens, 200);
  auto stress = plan_prompt("stress", none, std::nullopt, Json(), q);
  EXPECT_EQ(stress.lane, Lane::kBlind);
  EXPECT_EQ(stress.warnings.size(), 1u);
  EXPECT_THROW(plan_prompt("assisted", none, std::string("custom"), Json(), q), Error);
  EXPECT_THROW(plan_prompt("nonsense", none, std::nullopt, Json(), q), Error);
  auto custom = plan_prompt("assisted", described(), std::string("Just say hi"), Json(), q);
  EXPECT_EQ(custom.prompt, "Just say hi");
  EXPECT_FALSE(custom.metadata_exposed_to_prompt);
  EXPECT_EQ(custom.default_max_tokens, 1000);
}

TEST(CheckPrompts, AssistedPromptLayout) {
  QualityThresholds q;
  std::string p = build_assisted_prompt(described(), q);
  EXPECT_NE(p.find("Context: Authoritative context:\n- Capture date/time: 2026-08-13 17:14:49 UTC+01:00\n"
                   "- GPS: 51.959333\u00b0N, 1.349050\u00b0E\n\nDescriptive hints:\n"
                   "- Title hint: Seafront, at dusk\n- Description hint: Boats moored in the harbour.\n"
                   "- Keyword hints: boat, Harbour, sea\n\nWrite:\n"),
            std::string::npos)
      << p;
  EXPECT_TRUE(p.starts_with("Create British-English catalogue metadata from the image and supplied context."));
  EXPECT_TRUE(p.ends_with("Title:\nDescription:\nKeywords:"));
  ImageMetadata only_hints;
  only_hints.title = std::string(200, 'x');
  q.prompt_title_max_chars = 20;
  std::string p2 = build_assisted_prompt(only_hints, q);
  EXPECT_NE(p2.find("Context: Descriptive hints:\n- Title hint: " + std::string(17, 'x') + "...\n"), std::string::npos)
      << p2;
}

AnalysisInput input(const std::string& text, int64_t tokens, const std::string& prompt = kBlindPrompt) {
  AnalysisInput in;
  in.text = text;
  in.generation_tokens = tokens;
  in.prompt = prompt;
  in.max_tokens = 100;
  return in;
}

TEST(CheckAnalysis, CleanCatalogueIsUsable) {
  QualityThresholds q;
  std::string text =
      "Title: Small sailing boat moored beside a wooden pier\n"
      "Description: A red-hulled sailing boat rests on calm blue water beside a wooden pier under a low sun.\n"
      "Keywords: boat, sailing boat, pier, sea, water, sun, sky, harbour, hull, mast, sail, evening";
  auto a = analyze_generation_text(input(text, 60), q);
  auto as = assess_completed(a);
  EXPECT_EQ(as.usability, "usable") << as.observations.size();
  EXPECT_EQ(as.maintainer_status, "none");
  EXPECT_EQ(a.title_word_count.value_or(-1), 8);
  EXPECT_EQ(a.keyword_count.value_or(-1), 12);
  validate_assessment("m", as);
}

TEST(CheckAnalysis, DetectorsFire) {
  QualityThresholds q;
  // Missing sections + preamble.
  auto a = analyze_generation_text(input("Sure! Here you go.\nTitle: Boat\nDescription: A boat.", 20), q);
  EXPECT_EQ(a.missing_sections, std::vector<std::string>{"Keywords"});
  EXPECT_TRUE(a.has_preamble);
  auto as = assess_completed(a);
  EXPECT_EQ(as.usability, "unusable");
  EXPECT_EQ(as.observations.front(), "missing_requested_sections");
  EXPECT_EQ(enriched_label("missing_requested_sections", as.details), "Missing or empty fields: Keywords");
  // Phrase repetition.
  std::string rep;
  for (int i = 0; i < 12; ++i) rep += "the boat is on the water ";
  EXPECT_TRUE(analyze_generation_text(input(rep, 80, "Describe this image briefly."), q).repetitive);
  // Leaked control tokens vs declared wrappers.
  auto leak = analyze_generation_text(input("A boat.<|im_end|> <end_of_turn>", 5, "Describe."), q);
  EXPECT_EQ(leak.leaked_tokens, (std::vector<std::string>{"<end_of_turn>", "<|im_end|>"}));
  auto declared_in = input("A boat.<|im_end|>", 5, "Describe.");
  declared_in.declared_wrappers = {"<|im_end|>"};
  auto declared = analyze_generation_text(declared_in, q);
  EXPECT_TRUE(declared.leaked_tokens.empty());
  EXPECT_EQ(declared.configured_wrappers_present, std::vector<std::string>{"<|im_end|>"});
  // Thinking: incomplete trace; thinking only; completed trace is neutral.
  EXPECT_TRUE(analyze_generation_text(input("<think>hmm, a boat", 100, "Describe."), q).thinking_incomplete);
  EXPECT_TRUE(analyze_generation_text(input("<think>a boat</think>\n", 10, "Describe."), q).thinking_only);
  auto done = assess_completed(analyze_generation_text(input("<think>a boat</think>A red boat at a pier.", 20, "Describe."), q));
  EXPECT_EQ(done.usability, "usable");
  // Token cap: neutral alone, an observation with degradation evidence.
  auto capped_ok = analyze_generation_text(input("A red boat at a pier.", 100, "Describe."), q);
  EXPECT_TRUE(capped_ok.capped);
  EXPECT_TRUE(capped_ok.cutoff_reasons.empty());
  auto capped_bad = analyze_generation_text(input("A red boat at a pier and", 100, "Describe."), q);
  EXPECT_EQ(capped_bad.cutoff_reasons, std::vector<std::string>{"abrupt_tail"});
  // Minimal output and empty output.
  EXPECT_EQ(analyze_generation_text(input("Boat.", 2, "Describe."), q).minimal_reason.value_or(""),
            "minimal_words(1w;2tok)");
  auto empty = assess_completed(analyze_generation_text(input("  ", 0, "Describe."), q));
  EXPECT_EQ(empty.observations.front(), "empty_output");
  EXPECT_EQ(empty.maintainer_status, "observation_needs_reproduction");
  // Instruction echo.
  auto echo = analyze_generation_text(
      input("Return exactly these three sections and nothing else:\nTitle: x\nDescription: y\nKeywords: z", 30), q);
  EXPECT_FALSE(echo.echo_fragments.empty());
}

TEST(CheckAnalysis, ConstraintsAndHints) {
  QualityThresholds q;
  std::string prompt = build_assisted_prompt(described(), q);
  auto a = analyze_generation_text(
      input("Title: Boat\nDescription: A boat.\nKeywords: boat, boat, sky", 30, prompt), q);
  EXPECT_TRUE(a.constraint_violation);
  auto as = assess_completed(a);
  EXPECT_EQ(enriched_label("catalog_constraint_violation", as.details),
            "Title has 1 words (requested 5-10); Keyword list has 3 terms (requested 10-18); Duplicate keywords: boat");
  EXPECT_EQ(a.keyword_overlap, "some_overlap");
  auto none = analyze_generation_text(input("Title: A\nDescription: B.\nKeywords: cat, dog", 30, prompt), q);
  EXPECT_EQ(none.keyword_overlap, "no_overlap");
  auto copied = analyze_generation_text(
      input("Title: Seafront, at dusk\nDescription: Boats moored in the harbour.\nKeywords: boat, Harbour, sea", 30,
            prompt),
      q);
  EXPECT_EQ(copied.unchanged_draft_fields, (std::vector<std::string>{"title", "description", "keywords"}));
}

TEST(CheckAssessment, FailureSignaturesAreStableAndPathFree) {
  Failure a = classify_failure("model_load", "format", "/home/u/x/model.safetensors: header length 123 exceeds 45");
  Failure b = classify_failure("model_load", "format", "/tmp/y/model.safetensors: header length 999 exceeds 7");
  EXPECT_EQ(a.signature, b.signature);
  EXPECT_EQ(a.stage, "Weight Format");
  EXPECT_EQ(a.code, "MODEL_WEIGHTS_MODEL_LOAD_WEIGHT_FORMAT");
  Failure t = classify_failure("decode", "timeout", "worker timed out after 5 s in phase decode");
  EXPECT_EQ(t.stage, "Timeout");
  Failure n = classify_failure("model_load", "io", "Connection refused while fetching");
  EXPECT_EQ(n.stage, "Network Error");
  EXPECT_EQ(assess_failed(n, "").execution, "indeterminate");
  EXPECT_EQ(assess_failed(t, "").maintainer_status, "actionable_failure");
  EXPECT_EQ(normalize_failure_message("shape (3, 4, 5) vs 12\nsecond line"), "shape (N,...) vs N");
}

TEST(CheckQuality, TomlOverridesAndRejections) {
  test::TempDir dir;
  test::write_file(dir / "q.toml", "[thresholds]\nrepetition_ratio = 0.75\nmin_text_length = 20\nbogus = 1\n");
  auto ok = load_quality_config(dir / "q.toml");
  EXPECT_DOUBLE_EQ(ok.thresholds.repetition_ratio, 0.75);
  EXPECT_EQ(ok.thresholds.min_text_length, 20);
  ASSERT_EQ(ok.warnings.size(), 1u);
  EXPECT_NE(ok.warnings[0].find("bogus"), std::string::npos);
  test::write_file(dir / "bad.toml", "repetition_ratio = 1.5\n");
  auto bad = load_quality_config(dir / "bad.toml");
  EXPECT_DOUBLE_EQ(bad.thresholds.repetition_ratio, 0.9);  // defaults kept
  EXPECT_FALSE(bad.warnings.empty());
  test::write_file(dir / "broken.toml", "repetition_ratio = = \n");
  EXPECT_FALSE(load_quality_config(dir / "broken.toml").warnings.empty());
  EXPECT_THROW(load_quality_config(dir / "missing.toml"), Error);
}

TEST(CheckSha256, FipsVectorsAndCoreutils) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  test::TempDir dir;
  std::string big(1000003, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 % 251);
  test::write_file(dir / "f.bin", big);
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(("sha256sum " + (dir / "f.bin")).c_str(), "r"), &pclose);
  char buf[65] = {0};
  ASSERT_EQ(fread(buf, 1, 64, p.get()), 64u);
  EXPECT_EQ(sha256_file_hex(dir / "f.bin"), std::string(buf));
  EXPECT_EQ(sha256_hex(big), std::string(buf));
}

TEST(CheckRecords, JsonlRoundTrip) {
  test::TempDir dir;
  RunHeader h;
  h.timestamp = "2026-01-01T00:00:00+00:00";
  h.prompt = "p";
  ModelResult r;
  r.model = "org/m";
  r.generated_text = "tab\there \xE2\x80\x99";
  r.metrics.generation_tps = 12.5;
  Failure f;
  f.phase = "decode";
  r.failure = f;
  {
    JsonlWriter w(dir / "r.jsonl", true);
    w.write(encode(h));
    w.write(encode(r));
    r.generated_text = "second";
    w.write(encode(r));  // a later line for the same model wins
    RunFooter foot;
    foot.total_runtime_seconds = 3.25;
    w.write(encode(foot));
  }
  RunRecords back = read_results_jsonl(dir / "r.jsonl");
  ASSERT_EQ(back.results.size(), 1u);
  EXPECT_EQ(back.results[0].generated_text, "second");
  EXPECT_EQ(back.results[0].failure.value().phase, "decode");
  EXPECT_DOUBLE_EQ(back.results[0].metrics.generation_tps, 12.5);
  ASSERT_TRUE(back.footer);
  EXPECT_DOUBLE_EQ(back.footer->total_runtime_seconds, 3.25);
  EXPECT_EQ(encode(back.results[0]).dump(), encode(r).dump());
  test::write_file(dir / "bad.jsonl", "{\"_type\":\"result\"}\n");
  EXPECT_THROW(read_results_jsonl(dir / "bad.jsonl"), Error);
}

TEST(CheckText, EscapingAndFormats) {
  EXPECT_EQ(html_escape("<s>&\"'"), "&lt;s&gt;&amp;&quot;&#39;");
  EXPECT_EQ(md_cell("a|b\nc <s>"), "a\\|b<br>c &lt;s&gt;");
  EXPECT_EQ(md_fence("x ``` y"), "````text\nx ``` y\n````\n");
  EXPECT_EQ(base64_encode("Man"), "TWFu");
  EXPECT_EQ(base64_encode("Ma"), "TWE=");
  EXPECT_EQ(base64_encode("M"), "TQ==");
  EXPECT_EQ(fmt_tps(12345.4), "12,345");
  EXPECT_EQ(fmt_tps(42.25), "42.2");
  EXPECT_EQ(fmt_tps(3.14159), "3.14");
  EXPECT_EQ(fmt_gb(12.6), "13");
  EXPECT_EQ(fmt_gb(2.44), "2.4");
  EXPECT_EQ(fmt_gb(0.123), "0.12");
  EXPECT_EQ(truncate_chars("h\xC3\xA9llo world", 8), "h\xC3\xA9llo...");
  EXPECT_EQ(slugify("Org/Name-1.5B"), "org-name-1-5b");
}

}  // namespace
}  // namespace vlm::check
