// Metadata extraction with exiv2 (EXIF, IPTC, XMP in one pass) and the check_models merge rules.
// Decoding rules live in small pure functions (decode_exif_string, format_gps_coordinate, ...) so
// tests can pin them on exact bytes; read_image_metadata only gathers values and applies them.
#include "image/metadata.h"

#include <iconv.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>
#include <mutex>

#include <exiv2/exiv2.hpp>
#include <fmt/format.h>

#include "core/error.h"

namespace vlm {
namespace {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Decodes UTF-8 into code points; false when the bytes are not valid UTF-8.
bool utf8_to_codepoints(const std::string& s, std::vector<uint32_t>& out) {
  out.clear();
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : -1;
    if (n < 0 || i + static_cast<size_t>(n) >= s.size()) return false;
    uint32_t cp = n == 0 ? c : n == 1 ? (c & 0x1F) : n == 2 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Reject overlong forms and surrogates, as Python's strict decoder does.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    out.push_back(cp);
    i += static_cast<size_t>(n) + 1;
  }
  return true;
}

std::string latin1_to_utf8(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) append_utf8(out, c);
  return out;
}

// CP1252's 0x80–0x9F block (0 = undefined there).
constexpr uint16_t kCp1252High[32] = {0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                      0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0,      0x017D, 0,
                                      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                      0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0};

// Encodes code points as single bytes (Latin-1, or CP1252 when `cp1252`); false if one does not fit.
bool encode_single_byte(const std::vector<uint32_t>& cps, bool cp1252, std::string& out) {
  out.clear();
  for (uint32_t cp : cps) {
    if (cp < 0x80 || (cp >= 0xA0 && cp <= 0xFF) || (!cp1252 && cp <= 0xFF)) {
      out += static_cast<char>(cp);
      continue;
    }
    if (!cp1252) return false;
    int found = -1;
    for (int k = 0; k < 32; ++k)
      if (kCp1252High[k] == cp) found = k;
    if (found < 0) return false;
    out += static_cast<char>(0x80 + found);
  }
  return true;
}

size_t count_mojibake_markers(const std::string& s) {
  size_t n = 0;
  // "â€" covers "â€™" and "â€œ"; "Â" and "Ã" are the lead bytes of Latin-1 supplement letters.
  for (const char* marker : {"\xC3\x82", "\xC3\x83", "\xC3\xA2\xE2\x82\xAC"}) {
    for (size_t pos = s.find(marker); pos != std::string::npos; pos = s.find(marker, pos + 1)) ++n;
  }
  return n;
}

std::string utf16_to_utf8(const std::string& bytes, bool little_endian) {
  std::string out;
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    auto b0 = static_cast<unsigned char>(bytes[i]), b1 = static_cast<unsigned char>(bytes[i + 1]);
    uint32_t u = little_endian ? (b0 | (b1 << 8)) : ((b0 << 8) | b1);
    if (u == 0) break;
    if (u >= 0xD800 && u <= 0xDBFF && i + 3 < bytes.size()) {
      auto c0 = static_cast<unsigned char>(bytes[i + 2]), c1 = static_cast<unsigned char>(bytes[i + 3]);
      uint32_t lo = little_endian ? (c0 | (c1 << 8)) : ((c0 << 8) | c1);
      if (lo >= 0xDC00 && lo <= 0xDFFF) {
        append_utf8(out, 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00));
        i += 2;
        continue;
      }
    }
    append_utf8(out, (u >= 0xD800 && u <= 0xDFFF) ? 0xFFFD : u);
  }
  return out;
}

// Code points in the CJK blocks: a wrong UTF-16 byte order turns ASCII into these.
size_t count_cjk(const std::string& utf8) {
  std::vector<uint32_t> cps;
  if (!utf8_to_codepoints(utf8, cps)) return 0;
  return static_cast<size_t>(std::count_if(cps.begin(), cps.end(), [](uint32_t c) {
    return (c >= 0x3000 && c <= 0x9FFF) || (c >= 0xAC00 && c <= 0xD7AF) || (c >= 0xF900 && c <= 0xFAFF);
  }));
}

std::string decode_unicode_comment(const std::string& body) {
  if (body.size() >= 2) {
    auto b0 = static_cast<unsigned char>(body[0]), b1 = static_cast<unsigned char>(body[1]);
    if (b0 == 0xFF && b1 == 0xFE) return utf16_to_utf8(body.substr(2), true);
    if (b0 == 0xFE && b1 == 0xFF) return utf16_to_utf8(body.substr(2), false);
  }
  // No BOM: try big-endian (the EXIF default byte order for Motorola files) and little-endian and
  // keep the reading with fewer CJK-range characters — a swapped order maps ASCII into CJK.
  std::string be = utf16_to_utf8(body, false), le = utf16_to_utf8(body, true);
  return count_cjk(be) <= count_cjk(le) ? be : le;
}

std::string decode_shift_jis(const std::string& body) {
  iconv_t cd = iconv_open("UTF-8", "SHIFT_JIS");
  if (cd == reinterpret_cast<iconv_t>(-1)) return latin1_to_utf8(body);
  std::string in = body, out(body.size() * 4 + 4, '\0');
  char* inp = in.data();
  char* outp = out.data();
  size_t inleft = in.size(), outleft = out.size();
  size_t rc = iconv(cd, &inp, &inleft, &outp, &outleft);
  iconv_close(cd);
  if (rc == static_cast<size_t>(-1)) return latin1_to_utf8(body);
  out.resize(out.size() - outleft);
  return out;
}

std::string strip_nuls(std::string s) {
  s.erase(std::remove(s.begin(), s.end(), '\0'), s.end());
  return s;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::string lower_ascii(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::optional<std::string> non_empty(const std::string& s) {
  std::string t = trim(s);
  if (t.empty()) return std::nullopt;
  return t;
}

// Raw bytes of an EXIF value (undefined/byte/ascii types copy as stored).
std::string value_bytes(const Exiv2::Value& v) {
  std::string out(static_cast<size_t>(v.size()), '\0');
  if (!out.empty()) v.copy(reinterpret_cast<Exiv2::byte*>(out.data()), Exiv2::littleEndian);
  return out;
}

std::optional<std::string> exif_text(const Exiv2::ExifData& exif, const char* key) {
  auto it = exif.findKey(Exiv2::ExifKey(key));
  if (it == exif.end()) return std::nullopt;
  return non_empty(decode_exif_string(value_bytes(it->value())));
}

std::optional<std::string> xmp_text(const Exiv2::XmpData& xmp, const char* key) {
  auto it = xmp.findKey(Exiv2::XmpKey(key));
  if (it == xmp.end()) return std::nullopt;
  if (auto* alt = dynamic_cast<const Exiv2::LangAltValue*>(&it->value())) {
    auto d = alt->value_.find("x-default");
    if (d != alt->value_.end()) return non_empty(repair_mojibake(d->second));
    if (!alt->value_.empty()) return non_empty(repair_mojibake(alt->value_.begin()->second));
    return std::nullopt;
  }
  return non_empty(repair_mojibake(it->value().toString()));
}

std::optional<double> rational_at(const Exiv2::Value& v, long i) {
  Exiv2::Rational r = v.toRational(i);
  if (r.second == 0) return std::nullopt;
  return static_cast<double>(r.first) / static_cast<double>(r.second);
}

std::optional<std::string> gps_coordinate(const Exiv2::ExifData& exif, const char* value_key, const char* ref_key) {
  auto v = exif.findKey(Exiv2::ExifKey(value_key));
  auto r = exif.findKey(Exiv2::ExifKey(ref_key));
  if (v == exif.end() || r == exif.end()) return std::nullopt;
  std::vector<double> dms;
  for (long i = 0; i < v->count() && i < 3; ++i) {
    auto x = rational_at(v->value(), i);
    if (!x) return std::nullopt;
    dms.push_back(*x);
  }
  return format_gps_coordinate(dms, strip_nuls(r->value().toString()));
}

// "Key = value" lines for the EXIF block; binary blobs (maker notes, thumbnails) are summarised.
std::string render_exif(const Exiv2::ExifData& exif) {
  std::string out;
  for (const auto& d : exif) {
    if (d.groupName() == "MakerNote" || d.key().find("MakerNote") != std::string::npos) continue;
    std::string value;
    if (d.typeId() == Exiv2::undefined || d.typeId() == Exiv2::unsignedByte) {
      value = d.size() > 256 ? fmt::format("<{} bytes>", d.size()) : decode_exif_string(value_bytes(d.value()));
    } else {
      value = d.count() > 10 && d.typeId() != Exiv2::asciiString ? fmt::format("<tuple len={}>", d.count())
                                                                 : strip_nuls(d.value().toString());
    }
    out += fmt::format("{} = {}\n", d.key(), value);
  }
  return out;
}

std::once_flag g_exiv2_init;

}  // namespace

std::string repair_mojibake(const std::string& text) {
  size_t before = count_mojibake_markers(text);
  if (before == 0) return text;
  std::vector<uint32_t> cps;
  if (!utf8_to_codepoints(text, cps)) return text;
  for (bool cp1252 : {false, true}) {
    std::string bytes;
    std::vector<uint32_t> check;
    if (!encode_single_byte(cps, cp1252, bytes) || !utf8_to_codepoints(bytes, check)) continue;
    if (count_mojibake_markers(bytes) < before) return bytes;
  }
  return text;
}

std::string decode_exif_string(const std::string& raw) {
  std::string text;
  if (raw.size() >= 8 && raw.compare(0, 8, std::string("ASCII\0\0\0", 8)) == 0) {
    text = latin1_to_utf8(strip_nuls(raw.substr(8)));
  } else if (raw.size() >= 8 && raw.compare(0, 8, std::string("UNICODE\0", 8)) == 0) {
    text = decode_unicode_comment(raw.substr(8));
  } else if (raw.size() >= 8 && raw.compare(0, 8, std::string("JIS\0\0\0\0\0", 8)) == 0) {
    text = decode_shift_jis(strip_nuls(raw.substr(8)));
  } else if (raw.size() >= 8 && raw.compare(0, 8, std::string(8, '\0')) == 0) {
    text = strip_nuls(raw.substr(8));  // "undefined" character code: best effort below
    std::vector<uint32_t> cps;
    if (!utf8_to_codepoints(text, cps)) text = latin1_to_utf8(text);
  } else {
    text = strip_nuls(raw);
    std::vector<uint32_t> cps;
    if (!utf8_to_codepoints(text, cps)) text = latin1_to_utf8(text);
  }
  return repair_mojibake(strip_nuls(text));
}

std::string utf16le_to_utf8(const std::string& bytes) { return utf16_to_utf8(bytes, true); }

std::optional<std::string> format_gps_coordinate(const std::vector<double>& dms, const std::string& ref) {
  if (dms.empty() || dms.size() > 3) return std::nullopt;
  std::string r = trim(ref);
  if (r.size() != 1 || std::string("NSEWnsew").find(r[0]) == std::string::npos) return std::nullopt;
  double deg = dms[0] + (dms.size() > 1 ? dms[1] / 60.0 : 0.0) + (dms.size() > 2 ? dms[2] / 3600.0 : 0.0);
  if (!std::isfinite(deg) || deg < 0) return std::nullopt;
  return fmt::format("{:.6f}\u00b0{}", deg, static_cast<char>(std::toupper(static_cast<unsigned char>(r[0]))));
}

std::optional<std::pair<std::string, std::string>> format_capture_datetime(const std::string& value_in,
                                                                           const std::string& offset_in) {
  std::string value = trim(strip_nuls(value_in));
  int Y = 0, M = 0, D = 0, h = 0, m = 0, s = 0;
  char sep1 = 0, sep2 = 0;
  bool ok = false;
  if (value.size() == 19 && std::sscanf(value.c_str(), "%4d%c%2d%c%2d %2d:%2d:%2d", &Y, &sep1, &M, &sep2, &D, &h,
                                        &m, &s) == 8) {
    ok = (sep1 == ':' && sep2 == ':') || (sep1 == '-' && sep2 == '-');
  } else if (value.size() == 8 && std::all_of(value.begin(), value.end(), ::isdigit)) {
    ok = std::sscanf(value.c_str(), "%4d%2d%2d", &Y, &M, &D) == 3;
  }
  if (!ok || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || s > 60 || Y < 1) return std::nullopt;
  std::string date = fmt::format("{:04d}-{:02d}-{:02d} {:02d}:{:02d}:{:02d}", Y, M, D, h, m, s);
  std::string time = fmt::format("{:02d}:{:02d}:{:02d}", h, m, s);
  std::string offset = trim(strip_nuls(offset_in));
  int oh = 0, om = 0;
  char sign = 0;
  if (offset.size() == 6 && std::sscanf(offset.c_str(), "%c%2d:%2d", &sign, &oh, &om) == 3 &&
      (sign == '+' || sign == '-') && oh <= 23 && om <= 59) {
    return std::make_pair(fmt::format("{} UTC{}{:02d}:{:02d}", date, sign, oh, om), time);
  }
  // No offset: the wall-clock time in the system zone, named by its abbreviation for that date.
  std::tm tm{};
  tm.tm_year = Y - 1900;
  tm.tm_mon = M - 1;
  tm.tm_mday = D;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = s;
  tm.tm_isdst = -1;
  std::time_t t = std::mktime(&tm);
  char zone[64] = {0};
  if (t != static_cast<std::time_t>(-1)) std::strftime(zone, sizeof zone, "%Z", &tm);
  return std::make_pair(zone[0] ? fmt::format("{} {}", date, zone) : date, time);
}

std::vector<std::string> merge_keywords(const std::vector<std::vector<std::string>>& sources) {
  std::vector<std::string> out, seen;
  for (const auto& src : sources) {
    for (const auto& k : src) {
      std::string t = trim(k);
      if (t.empty()) continue;
      std::string key = lower_ascii(t);
      if (std::find(seen.begin(), seen.end(), key) != seen.end()) continue;
      seen.push_back(key);
      out.push_back(t);
    }
  }
  return out;
}

ImageMetadata read_image_metadata(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) throw_error(ErrorKind::kNotFound, "{}: image not found", path);
  std::call_once(g_exiv2_init, [] {
    Exiv2::XmpParser::initialize();
    Exiv2::LogMsg::setLevel(Exiv2::LogMsg::mute);  // fail-soft: problems become warnings, not stderr noise
  });
  Exiv2::Image::AutoPtr image;
  try {
    image = Exiv2::ImageFactory::open(path);
    image->readMetadata();
  } catch (const Exiv2::AnyError& e) {
    throw_error(ErrorKind::kFormat, "{}: cannot read image metadata: {}", path, e.what());
  }
  ImageMetadata md;
  md.width = image->pixelWidth();
  md.height = image->pixelHeight();
  md.mime_type = image->mimeType();

  std::vector<std::string> iptc_kw, xmp_kw, xp_kw;
  std::optional<std::string> iptc_caption, xmp_desc, exif_desc;
  try {
    const auto& exif = image->exifData();
    exif_desc = exif_text(exif, "Exif.Image.ImageDescription");
    if (!exif_desc) exif_desc = exif_text(exif, "Exif.Photo.UserComment");
    // Date: the first present tag, paired with its own offset tag.
    const std::pair<const char*, const char*> kDateTags[] = {
        {"Exif.Photo.DateTimeOriginal", "Exif.Photo.OffsetTimeOriginal"},
        {"Exif.Photo.DateTimeDigitized", "Exif.Photo.OffsetTimeDigitized"},
        {"Exif.Image.DateTimeOriginal", "Exif.Photo.OffsetTimeDigitized"},  // TIFF/EP CreateDate position
        {"Exif.Image.DateTime", "Exif.Photo.OffsetTime"}};
    for (const auto& [tag, offset_tag] : kDateTags) {
      auto v = exif_text(exif, tag);
      if (!v) continue;
      auto dt = format_capture_datetime(*v, exif_text(exif, offset_tag).value_or(""));
      if (dt) {
        md.date = dt->first;
        md.time = dt->second;
      } else {
        md.warnings.push_back(fmt::format("{}: unparseable date '{}'", tag, *v));
      }
      break;
    }
    auto lat = gps_coordinate(exif, "Exif.GPSInfo.GPSLatitude", "Exif.GPSInfo.GPSLatitudeRef");
    auto lon = gps_coordinate(exif, "Exif.GPSInfo.GPSLongitude", "Exif.GPSInfo.GPSLongitudeRef");
    if (lat && lon) md.gps = *lat + ", " + *lon;
    auto xp = exif.findKey(Exiv2::ExifKey("Exif.Image.XPKeywords"));
    if (xp != exif.end()) {
      std::string text = utf16le_to_utf8(value_bytes(xp->value()));
      for (size_t b = 0;;) {
        size_t e = text.find(';', b);
        xp_kw.push_back(text.substr(b, e == std::string::npos ? std::string::npos : e - b));
        if (e == std::string::npos) break;
        b = e + 1;
      }
    }
    md.exif = render_exif(exif);
  } catch (const Exiv2::AnyError& e) {
    md.warnings.push_back(fmt::format("EXIF: {}", e.what()));
  }
  try {
    for (const auto& d : image->iptcData()) {
      if (d.key() == "Iptc.Application2.Keywords") iptc_kw.push_back(repair_mojibake(d.value().toString()));
      if (d.key() == "Iptc.Application2.Caption" && !iptc_caption)
        iptc_caption = non_empty(repair_mojibake(d.value().toString()));
    }
  } catch (const Exiv2::AnyError& e) {
    md.warnings.push_back(fmt::format("IPTC: {}", e.what()));
  }
  try {
    const auto& xmp = image->xmpData();
    md.title = xmp_text(xmp, "Xmp.dc.title");
    xmp_desc = xmp_text(xmp, "Xmp.dc.description");
    auto subj = xmp.findKey(Exiv2::XmpKey("Xmp.dc.subject"));
    if (subj != xmp.end())
      for (long i = 0; i < subj->count(); ++i) xmp_kw.push_back(repair_mojibake(subj->toString(i)));
  } catch (const Exiv2::AnyError& e) {
    md.warnings.push_back(fmt::format("XMP: {}", e.what()));
  }
  md.description = iptc_caption ? iptc_caption : xmp_desc ? xmp_desc : exif_desc;
  md.keyword_list = merge_keywords({iptc_kw, xmp_kw, xp_kw});
  if (!md.keyword_list.empty()) {
    std::string joined;
    for (const auto& k : md.keyword_list) joined += (joined.empty() ? "" : ", ") + k;
    md.keywords = joined;
  }
  return md;
}

}  // namespace vlm
