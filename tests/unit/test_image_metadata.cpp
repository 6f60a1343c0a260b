// Metadata extraction on real files: a JPEG encoded here with libjpeg-turbo, then tagged with EXIF,
// GPS, IPTC, XMP and XPKeywords by the exiv2 command-line tool (an independent writer), then read
// back by read_image_metadata. The decoding rules are also pinned on exact bytes.
#include <gtest/gtest.h>
#include <turbojpeg.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "image/metadata.h"
#include "support/test_support.h"

namespace {

using vlm::test::TempDir;

// A real 64x48 baseline JPEG with a gradient (tjCompress2 writes no metadata of its own).
void write_jpeg(const std::string& path, int w = 64, int h = 48) {
  std::vector<unsigned char> rgb(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      auto* p = &rgb[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<unsigned char>(x * 4);
      p[1] = static_cast<unsigned char>(y * 5);
      p[2] = 128;
    }
  tjhandle h_ = tjInitCompress();
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(h_, rgb.data(), w, 0, h, TJPF_RGB, &jpeg, &size, TJSAMP_444, 90, 0), 0);
  vlm::test::write_file(path, std::string(reinterpret_cast<char*>(jpeg), size));
  tjFree(jpeg);
  tjDestroy(h_);
}

// Runs the exiv2 CLI with -M commands (each a separate "set ..." string).
void exiv2_modify(const std::string& path, const std::vector<std::string>& cmds) {
  std::string line = "exiv2";
  for (const auto& c : cmds) line += " -M'" + c + "'";
  line += " '" + path + "' 2>&1";
  ASSERT_EQ(std::system(line.c_str()), 0) << line;
}

TEST(ImageMetadata, ReadsEveryBlockWrittenByExiv2) {
  TempDir dir;
  std::string img = dir / "photo.jpg";
  write_jpeg(img);
  exiv2_modify(img, {
                        "set Exif.Photo.DateTimeOriginal 2026:08:13 17:14:49",
                        "set Exif.Photo.OffsetTimeOriginal +01:00",
                        "set Exif.Image.DateTime 2020:01:01 00:00:00",
                        "set Exif.GPSInfo.GPSLatitude 51/1 57/1 3384/100",
                        "set Exif.GPSInfo.GPSLatitudeRef N",
                        "set Exif.GPSInfo.GPSLongitude 1/1 20/1 5658/100",
                        "set Exif.GPSInfo.GPSLongitudeRef W",
                        "set Exif.Image.ImageDescription EXIF description",
                        "add Iptc.Application2.Keywords Harbour",
                        "add Iptc.Application2.Keywords boats",
                        "set Iptc.Application2.Caption IPTC caption wins",
                        "set Xmp.dc.title lang=x-default Seafront at dusk",
                        "set Xmp.dc.description lang=x-default XMP description",
                        "set Xmp.dc.subject XmpBag harbour",
                        "set Xmp.dc.subject XmpBag Pier",
                    });
  vlm::ImageMetadata md = vlm::read_image_metadata(img);
  EXPECT_EQ(md.width, 64);
  EXPECT_EQ(md.height, 48);
  EXPECT_EQ(md.mime_type, "image/jpeg");
  ASSERT_TRUE(md.date);
  EXPECT_EQ(*md.date, "2026-08-13 17:14:49 UTC+01:00");  // DateTimeOriginal beats DateTime
  EXPECT_EQ(md.time.value_or(""), "17:14:49");
  // 51 + 57/60 + 33.84/3600 = 51.959400; 1 + 20/60 + 56.58/3600 = 1.349050
  EXPECT_EQ(md.gps.value_or(""), "51.959400\u00b0N, 1.349050\u00b0W");
  EXPECT_EQ(md.description.value_or(""), "IPTC caption wins");
  EXPECT_EQ(md.title.value_or(""), "Seafront at dusk");
  // IPTC first, then XMP; "harbour" duplicates "Harbour" case-insensitively.
  EXPECT_EQ(md.keywords.value_or(""), "Harbour, boats, Pier");
  EXPECT_NE(md.exif.find("Exif.Photo.DateTimeOriginal = 2026:08:13 17:14:49"), std::string::npos) << md.exif;
  EXPECT_TRUE(md.has_descriptive());
}

TEST(ImageMetadata, FallsBackThroughDescriptionSourcesAndXpKeywords) {
  TempDir dir;
  std::string img = dir / "plain.jpg";
  write_jpeg(img);
  // XPKeywords are UTF-16LE bytes: "tree;Sky" then a NUL terminator.
  exiv2_modify(img, {"set Exif.Image.ImageDescription Only EXIF here",
                     "set Exif.Image.XPKeywords 116 0 114 0 101 0 101 0 59 0 83 0 107 0 121 0 0 0",
                     "set Exif.Image.DateTime 2024:02:29 08:00:01", "set Exif.Photo.OffsetTime -05:30"});
  auto md = vlm::read_image_metadata(img);
  EXPECT_EQ(md.description.value_or(""), "Only EXIF here");
  EXPECT_EQ(md.keywords.value_or(""), "tree, Sky");
  EXPECT_EQ(md.date.value_or(""), "2024-02-29 08:00:01 UTC-05:30");
  EXPECT_FALSE(md.title);
  EXPECT_FALSE(md.gps);  // no GPS block at all
}

TEST(ImageMetadata, NoMetadataAndBadFiles) {
  TempDir dir;
  std::string img = dir / "bare.jpg";
  write_jpeg(img, 17, 9);
  auto md = vlm::read_image_metadata(img);
  EXPECT_EQ(md.width, 17);
  EXPECT_FALSE(md.date);
  EXPECT_FALSE(md.has_descriptive());
  EXPECT_THROW(vlm::read_image_metadata(dir / "missing.jpg"), vlm::Error);
  vlm::test::write_file(dir / "junk.jpg", "this is not an image");
  try {
    vlm::read_image_metadata(dir / "junk.jpg");
    FAIL() << "junk accepted";
  } catch (const vlm::Error& e) {
    EXPECT_EQ(e.kind(), vlm::ErrorKind::kFormat);
    EXPECT_NE(std::string(e.what()).find("junk.jpg"), std::string::npos);
  }
}

TEST(ImageMetadataRules, UserCommentPrefixes) {
  using vlm::decode_exif_string;
  EXPECT_EQ(decode_exif_string(std::string("ASCII\0\0\0Hello\0\0", 15)), "Hello");
  // UNICODE with big-endian and little-endian bodies and no BOM: the CJK heuristic picks the right one.
  std::string be = std::string("UNICODE\0", 8) + std::string("\0H\0i\0!", 6);
  std::string le = std::string("UNICODE\0", 8) + std::string("H\0i\0!\0", 6);
  EXPECT_EQ(decode_exif_string(be), "Hi!");
  EXPECT_EQ(decode_exif_string(le), "Hi!");
  // JIS: Shift-JIS bytes for 日本 (0x93FA 0x967B).
  EXPECT_EQ(decode_exif_string(std::string("JIS\0\0\0\0\0\x93\xFA\x96\x7B", 12)), "\xE6\x97\xA5\xE6\x9C\xAC");
  // Not UTF-8: Latin-1 fallback ("café" in Latin-1).
  EXPECT_EQ(decode_exif_string("caf\xE9"), "caf\xC3\xA9");
}

TEST(ImageMetadataRules, MojibakeRepair) {
  // "café" encoded to UTF-8, read as Latin-1, re-encoded to UTF-8: "cafÃ©".
  EXPECT_EQ(vlm::repair_mojibake("caf\xC3\x83\xC2\xA9"), "caf\xC3\xA9");
  // A right single quote read as CP1252: "itâ€™s" → "it’s".
  EXPECT_EQ(vlm::repair_mojibake("it\xC3\xA2\xE2\x82\xAC\xE2\x84\xA2s"), "it\xE2\x80\x99s");
  // Real text with Ã that does not repair stays as it is.
  EXPECT_EQ(vlm::repair_mojibake("\xC3\x83 la carte"), "\xC3\x83 la carte");
  EXPECT_EQ(vlm::repair_mojibake("plain"), "plain");
}

TEST(ImageMetadataRules, GpsAndDates) {
  EXPECT_EQ(vlm::format_gps_coordinate({51, 57, 33.6}, "N").value_or(""), "51.959333\u00b0N");
  EXPECT_EQ(vlm::format_gps_coordinate({1.34905}, "e").value_or(""), "1.349050\u00b0E");
  EXPECT_EQ(vlm::format_gps_coordinate({33, 30}, "S").value_or(""), "33.500000\u00b0S");
  EXPECT_FALSE(vlm::format_gps_coordinate({51, 57, 33.6}, ""));
  EXPECT_FALSE(vlm::format_gps_coordinate({}, "N"));
  auto dt = vlm::format_capture_datetime("2026-08-13 17:14:49", "+01:00");
  ASSERT_TRUE(dt);
  EXPECT_EQ(dt->first, "2026-08-13 17:14:49 UTC+01:00");
  setenv("TZ", "Europe/London", 1);
  tzset();
  auto local = vlm::format_capture_datetime("2026:08:13 17:14:49", "");
  ASSERT_TRUE(local);
  EXPECT_EQ(local->first, "2026-08-13 17:14:49 BST");
  auto winter = vlm::format_capture_datetime("20260113", "");
  ASSERT_TRUE(winter);
  EXPECT_EQ(winter->first, "2026-01-13 00:00:00 GMT");
  EXPECT_FALSE(vlm::format_capture_datetime("2026:13:01 00:00:00", ""));
  EXPECT_FALSE(vlm::format_capture_datetime("yesterday", ""));
}

TEST(ImageMetadataRules, KeywordMergeAndUtf16) {
  auto k = vlm::merge_keywords({{"Boat", " sea "}, {"boat", "Sky", ""}, {"SEA", "gull"}});
  EXPECT_EQ(k, (std::vector<std::string>{"Boat", "sea", "Sky", "gull"}));
  EXPECT_EQ(vlm::utf16le_to_utf8(std::string("a\0\xE9\0\0\0z\0", 8)), "a\xC3\xA9");
}

}  // namespace
