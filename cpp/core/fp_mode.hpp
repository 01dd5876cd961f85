// The floating-point mode of the engine's threads: denormal numbers flushed to zero while a vaecpp
// call works, the caller's own mode everywhere else.
//
// Why: Adam's moments of weights whose gradient is (nearly) always zero (border pixels, dead units)
// decay into the denormal range, and on Intel cores every operation on a denormal takes a
// microcode assist of about a hundred cycles: half of a 784-512-2 epoch went there (issue 12).
// Flush-to-zero (FTZ: a result that would be denormal is 0) and denormals-are-zero (DAZ: a
// denormal input reads as 0) remove that; TensorFlow runs its compute threads the same way. The
// losses change only where a value below 1.2e-38 (float) or 2.2e-308 (double) mattered.
//
// x86-64: the FTZ and DAZ bits of MXCSR (which SSE/AVX float and double arithmetic obeys).
// AArch64: the FZ bit of FPCR (flushes inputs and outputs). Other targets: a no-op.
// The switch is process-wide: set_flush_denormal(bool), default on, or VAECPP_FLUSH_DENORMAL=0
// (also false / off / no) in the environment, read once when first needed.
//
// Threads: a DenormalScope sets the bits on the calling thread and on every thread of the OpenMP
// team its parallel regions will use (team_size(), so open it after use_threads()), and puts each
// thread's own bits back when it ends. libgomp keeps a pool of worker threads per calling thread
// and reuses them, but a region with fewer threads (parallel_pair's num_threads(2), an if(false)
// region) may retire the surplus and a later, larger region start new ones, which inherit the mode
// of the thread that creates them (POSIX). So each saved mode is tagged with the thread it was read
// from, and a worker that the scope did not see on entry (started inside it, from a flushing
// caller) gets the caller's original bits: the mode it would have inherited outside the scope.
// The exit region is as large as the team then is (a callback's nested call may have raised the
// thread count), so no worker keeps the engine's mode.
// Worker modes are set before the caller's and restored before it, so a worker started by the
// entry or exit region itself inherits the mode that is right for it. Only the FTZ/DAZ (FZ) bits
// are touched: rounding mode, exception masks and sticky flags stay as the thread has them.
//
// While Python code runs inside a call (a progress callback, a custom likelihood), CallerFpMode
// gives the calling thread back the caller's bits, so the user's NumPy code keeps IEEE behaviour.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/threads.hpp"

#if defined(__x86_64__) || defined(_M_X64) || defined(__SSE2__)
#include <xmmintrin.h>
#define VAECPP_FP_MODE_X86 1
#endif

namespace vaecpp {

namespace fp_mode {

#if defined(VAECPP_FP_MODE_X86)
using Bits = uint32_t;
constexpr Bits kFlushBits = 0x8000u | 0x0040u;  // MXCSR: FTZ (bit 15) | DAZ (bit 6)
inline Bits get() { return _mm_getcsr(); }
inline void set(Bits b) { _mm_setcsr(b); }
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
using Bits = uint64_t;
constexpr Bits kFlushBits = Bits(1) << 24;  // FPCR.FZ
inline Bits get() {
    Bits r;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(r));
    return r;
}
inline void set(Bits b) { __asm__ __volatile__("msr fpcr, %0" : : "r"(b)); }
#else
using Bits = uint32_t;
constexpr Bits kFlushBits = 0;  // no known flush bits: the scope does nothing
inline Bits get() { return 0; }
inline void set(Bits) {}
#endif

// This thread's flush bits made equal to those of `from`; every other bit as it is now.
inline void put_flush_bits(Bits from) {
    if (kFlushBits == 0) return;
    const Bits now = get(), want = (now & ~kFlushBits) | (from & kFlushBits);
    if (want != now) set(want);
}

// A number that names this thread for the life of the process (never reused, unlike thread ids).
inline uint64_t thread_tag() {
    static std::atomic<uint64_t> next{1};
    thread_local const uint64_t tag = next.fetch_add(1);
    return tag;
}

inline bool env_flush_default() {
    const char* e = std::getenv("VAECPP_FLUSH_DENORMAL");
    if (!e) return true;
    for (const char* off : {"0", "false", "False", "FALSE", "off", "OFF", "no", "NO"})
        if (std::strcmp(e, off) == 0) return false;
    return true;
}

inline std::atomic<bool>& flush_switch() {
    static std::atomic<bool> on{env_flush_default()};
    return on;
}

}  // namespace fp_mode

// The process-wide switch (default on; VAECPP_FLUSH_DENORMAL=0 turns the default off). Scopes
// opened afterwards follow it; one already open keeps the mode it set.
inline void set_flush_denormal(bool on) { fp_mode::flush_switch().store(on); }
inline bool flush_denormal() { return fp_mode::flush_switch().load(); }
// Whether this target has flush bits at all (false: the switch changes nothing).
inline bool flush_denormal_supported() { return fp_mode::kFlushBits != 0; }

class DenormalScope {
  public:
    DenormalScope() : DenormalScope(flush_denormal()) {}
    explicit DenormalScope(bool flush) {
        if (!flush || fp_mode::kFlushBits == 0) return;
        active_ = true;
        caller_ = fp_mode::get();
        set_team();
        fp_mode::put_flush_bits(fp_mode::kFlushBits);
        prev_ = innermost();
        innermost() = this;
    }
    ~DenormalScope() {
        if (!active_) return;
        restore_team();
        fp_mode::put_flush_bits(caller_);
        innermost() = prev_;
    }
    DenormalScope(const DenormalScope&) = delete;
    DenormalScope& operator=(const DenormalScope&) = delete;

  private:
    friend class CallerFpMode;
    struct Slot {
        uint64_t tag = 0;  // the thread whose bits these are (0: none seen)
        fp_mode::Bits bits = 0;
    };
    bool active_ = false;
    fp_mode::Bits caller_ = 0;
    const DenormalScope* prev_ = nullptr;
    std::vector<Slot> slots_;  // one per team member; [0] is the caller, kept in caller_

    // The innermost open scope on this thread (scopes nest when a callback calls the engine).
    static const DenormalScope*& innermost() {
        thread_local const DenormalScope* s = nullptr;
        return s;
    }

    void set_team() {
#ifdef _OPENMP
        const int n = team_size();
        if (n <= 1 || omp_in_parallel()) return;  // an inner region would run on this thread alone
        slots_.resize(n);
        Slot* slots = slots_.data();
#pragma omp parallel num_threads(n)
        {
            const int t = omp_get_thread_num();
            if (t > 0) {
                slots[t] = {fp_mode::thread_tag(), fp_mode::get()};
                fp_mode::put_flush_bits(fp_mode::kFlushBits);
            }
        }
#endif
    }

    // Every worker the team may hold now: the scope's own, and more if a nested call (from a
    // callback) raised this thread's thread count meanwhile.
    void restore_team() {
#ifdef _OPENMP
        const int seen = int(slots_.size()), n = std::max(seen, team_size());
        if (n <= 1 || omp_in_parallel()) return;
        const Slot* slots = slots_.data();
        const fp_mode::Bits caller = caller_;
#pragma omp parallel num_threads(n)
        {
            const int t = omp_get_thread_num();
            if (t > 0)
                fp_mode::put_flush_bits(t < seen && slots[t].tag == fp_mode::thread_tag() ? slots[t].bits
                                                                                         : caller);
        }
#endif
    }
};

// Inside a DenormalScope, the calling thread back in the caller's mode until this ends (then in
// the engine's again): for Python code that a vaecpp call runs. A no-op outside any scope.
class CallerFpMode {
  public:
    CallerFpMode() {
        const DenormalScope* s = DenormalScope::innermost();
        if (!s) return;
        active_ = true;
        engine_ = fp_mode::get();
        fp_mode::put_flush_bits(s->caller_);
    }
    ~CallerFpMode() {
        if (active_) fp_mode::put_flush_bits(engine_);
    }
    CallerFpMode(const CallerFpMode&) = delete;
    CallerFpMode& operator=(const CallerFpMode&) = delete;

  private:
    bool active_ = false;
    fp_mode::Bits engine_ = 0;
};

}  // namespace vaecpp
