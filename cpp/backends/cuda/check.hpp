// Error checking and device memory for the CUDA backend. Every CUDA runtime and cuBLAS call goes
// through VAECPP_CUDA_CHECK / VAECPP_CUBLAS_CHECK, which turn a failure into a CudaError carrying
// CUDA's own message (the bindings map it to Python's RuntimeError).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <stdexcept>
#include <string>

namespace vaecpp::cuda {

struct CudaError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

[[noreturn]] inline void throw_cuda(cudaError_t err, const char* what, const char* file, int line) {
    throw CudaError(std::string("CUDA error ") + cudaGetErrorName(err) + " (" +
                    cudaGetErrorString(err) + ") in " + what + " at " + file + ":" +
                    std::to_string(line));
}

#define VAECPP_CUDA_CHECK(call)                                                         \
    do {                                                                                \
        cudaError_t vaecpp_err_ = (call);                                               \
        if (vaecpp_err_ != cudaSuccess)                                                 \
            ::vaecpp::cuda::throw_cuda(vaecpp_err_, #call, __FILE__, __LINE__);         \
    } while (0)

// After a kernel launch: a bad configuration shows here, a fault at the next synchronising call.
#define VAECPP_CUDA_CHECK_LAUNCH() VAECPP_CUDA_CHECK(cudaGetLastError())

// A device array that grows on demand (never shrinks) and frees itself.
template <typename T>
class DeviceBuffer {
  public:
    DeviceBuffer() = default;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() { release(); }

    T* data() const { return ptr_; }
    size_t size() const { return n_; }

    // At least n elements; the contents are kept only when no reallocation was needed.
    void reserve(size_t n) {
        if (n <= cap_) {
            n_ = n;
            return;
        }
        release();
        if (n > 0) VAECPP_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), n * sizeof(T)));
        cap_ = n_ = n;
    }
    void upload(const T* host, size_t n) {
        reserve(n);
        if (n > 0) VAECPP_CUDA_CHECK(cudaMemcpy(ptr_, host, n * sizeof(T), cudaMemcpyHostToDevice));
    }
    void download(T* host, size_t n) const {
        if (n > n_) throw CudaError("DeviceBuffer::download: more elements than the buffer holds");
        if (n > 0) VAECPP_CUDA_CHECK(cudaMemcpy(host, ptr_, n * sizeof(T), cudaMemcpyDeviceToHost));
    }
    void zero() {
        if (n_ > 0) VAECPP_CUDA_CHECK(cudaMemset(ptr_, 0, n_ * sizeof(T)));
    }

  private:
    T* ptr_ = nullptr;
    size_t n_ = 0, cap_ = 0;
    void release() noexcept {
        if (ptr_) cudaFree(ptr_);  // no throw from a destructor; a broken context shows elsewhere
        ptr_ = nullptr;
        n_ = cap_ = 0;
    }
};

}  // namespace vaecpp::cuda
