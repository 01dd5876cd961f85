// Device discovery.
#include "common.cuh"
#include "kernels.hpp"

namespace vaecpp::cuda {

int device_count() noexcept {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {  // no driver, no device, ...: none usable
        cudaGetLastError();                        // clear the error so later calls start clean
        return 0;
    }
    return n;
}

}  // namespace vaecpp::cuda
