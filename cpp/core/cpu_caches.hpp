// The data cache sizes of the CPU the engine runs on (one core's L1d and L2), read once: Linux's
// sysfs, else the C library's sysconf (glibc asks cpuid), else typical sizes. The matrix product
// sizes its cache blocks from them (gemm.hpp). VAECPP_CPU_CACHES="48K,2M" overrides them (tests,
// or a CPU whose caches are misreported, e.g. in some VMs).
#pragma once

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace vaecpp {

struct CacheSizes {
    long l1d = 32 * 1024, l2 = 512 * 1024;  // bytes per core
    const char* source = "default";         // "sysfs", "sysconf", "VAECPP_CPU_CACHES" or "default"
};

namespace caches_detail {

// "32K", "512K", "2M", "32768" (bytes) -> bytes; 0 when it is not a size.
inline long parse_size(const std::string& s) {
    size_t i = 0;
    long v = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) v = v * 10 + (s[i++] - '0');
    if (i == 0) return 0;
    const char u = i < s.size() ? char(std::toupper(static_cast<unsigned char>(s[i]))) : ' ';
    return u == 'K' ? v << 10 : u == 'M' ? v << 20 : v;
}

// Sizes worth trusting: a core's L1d between 4 KiB and 1 MiB, its L2 larger and below 256 MiB.
inline bool plausible(long l1d, long l2) {
    return l1d >= (4L << 10) && l1d <= (1L << 20) && l2 > l1d && l2 <= (256L << 20);
}

inline std::string read_line(const std::string& path) {
    std::string out;
    if (FILE* f = std::fopen(path.c_str(), "r")) {
        char buf[64];
        if (std::fgets(buf, sizeof buf, f)) out = buf;
        std::fclose(f);
    }
    while (!out.empty() && std::isspace(static_cast<unsigned char>(out.back()))) out.pop_back();
    return out;
}

inline bool from_sysfs(CacheSizes& c) {
    long l1d = 0, l2 = 0;
    for (int i = 0; i < 16; ++i) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
        const std::string level = read_line(dir + "level"), type = read_line(dir + "type");
        if (level.empty()) continue;
        const long size = parse_size(read_line(dir + "size"));
        if (level == "1" && type == "Data") l1d = size;
        if (level == "2" && (type == "Unified" || type == "Data")) l2 = size;
    }
    if (!plausible(l1d, l2)) return false;
    c = {l1d, l2, "sysfs"};
    return true;
}

inline bool from_sysconf(CacheSizes& c) {
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
    const long l1d = sysconf(_SC_LEVEL1_DCACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (!plausible(l1d, l2)) return false;
    c = {l1d, l2, "sysconf"};
    return true;
#else
    return false;
#endif
}

inline bool from_env(CacheSizes& c) {
    const char* e = std::getenv("VAECPP_CPU_CACHES");
    if (!e) return false;
    const std::string s(e);
    const size_t comma = s.find(',');
    if (comma == std::string::npos) return false;
    const long l1d = parse_size(s.substr(0, comma)), l2 = parse_size(s.substr(comma + 1));
    if (!plausible(l1d, l2)) return false;
    c = {l1d, l2, "VAECPP_CPU_CACHES"};
    return true;
}

inline CacheSizes detect() {
    CacheSizes c;
    if (!from_env(c) && !from_sysfs(c)) from_sysconf(c);
    return c;
}

}  // namespace caches_detail

inline const CacheSizes& cpu_caches() {
    static const CacheSizes c = caches_detail::detect();
    return c;
}

}  // namespace vaecpp
