// Machine and build provenance for run records (check_models §3.3 translated to Linux per §7):
// CPU model and cores, RAM / available / swap from /proc/meminfo, kernel and OS release, compute
// backend, and the versions of vlmcheck and the libraries it was built with.
#pragma once

#include "core/json.h"

namespace vlm::check {

Json system_characteristics();  // {"OS": …, "CPU": …, "RAM": …, …}
Json library_versions();        // {"vlmcheck": …, "exiv2": …, "fmt": …, …}
Json producer_record();         // {"name": "vlmcheck", "version", "build_type", "compiler", "git_revision"}

}  // namespace vlm::check
