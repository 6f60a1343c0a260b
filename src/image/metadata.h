// Photo metadata for the checker's prompts and reports: EXIF capture date/time with its offset,
// GPS as unsigned degrees with a cardinal suffix, IPTC caption + keywords, XMP dc:title /
// dc:description / dc:subject, Windows XPKeywords, and UserComment decoding with mojibake repair,
// merged by check_models' rules (reference/check_models.md §2.3). Read with exiv2. Extraction is
// fail-soft: a broken block is noted in `warnings` and the rest is still read; only an unreadable
// file throws.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vlm {

struct ImageMetadata {
  std::optional<std::string> title;        // XMP dc:title only
  std::optional<std::string> description;  // IPTC caption, else XMP description, else EXIF ImageDescription
  std::vector<std::string> keyword_list;   // IPTC, then XMP subject, then XPKeywords; case-insensitive dedup
  std::optional<std::string> keywords;     // keyword_list joined with ", "
  std::optional<std::string> date;         // "2026-08-13 17:14:49 UTC+01:00" or with the local zone name
  std::optional<std::string> time;         // "17:14:49"
  std::optional<std::string> gps;          // "51.959333°N, 1.349050°E"
  std::string exif;                        // raw EXIF rendered as "Key = value" lines
  int64_t width = 0, height = 0;           // pixel size as the container declares it (0 if unknown)
  std::string mime_type;
  std::vector<std::string> warnings;       // sub-steps that failed, with their reason
  bool has_descriptive() const { return title || description || keywords; }
};

// Reads every block of `path`. Throws Error(kNotFound) for a missing file and Error(kFormat) when
// exiv2 cannot recognise the image at all.
ImageMetadata read_image_metadata(const std::string& path);

// ---- the rules, exposed so that tests can check them on exact bytes ---------------------------
// EXIF text: strips NULs, honours the 8-byte UserComment prefixes ASCII\0 / UNICODE\0 / JIS\0,
// otherwise UTF-8 with a Latin-1 fallback, then repairs mojibake.
std::string decode_exif_string(const std::string& bytes);
// Re-encodes text that shows UTF-8-read-as-Latin-1/CP1252 markers (Â, Ã, â€) and keeps the repair
// only when the marker count drops.
std::string repair_mojibake(const std::string& text);
// Degrees from 1–3 (degrees, minutes, seconds) values; "51.959333°N". nullopt when malformed.
std::optional<std::string> format_gps_coordinate(const std::vector<double>& dms, const std::string& ref);
// "YYYY:MM:DD HH:MM:SS" | "YYYY-MM-DD HH:MM:SS" | "YYYYMMDD" with an optional "+HH:MM" offset.
// Returns {date, time}; without an offset the local time zone's abbreviation is attached.
std::optional<std::pair<std::string, std::string>> format_capture_datetime(const std::string& value,
                                                                           const std::string& offset);
// Keywords from several sources, de-duplicated case-insensitively in first-seen order.
std::vector<std::string> merge_keywords(const std::vector<std::vector<std::string>>& sources);
// UTF-16LE bytes (Windows XP tags) to UTF-8, stopping at a NUL code unit.
std::string utf16le_to_utf8(const std::string& bytes);

}  // namespace vlm
