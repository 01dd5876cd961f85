// A test entry point (not used by the package): trains an engine built from a model configuration
// with the CPU backend's optimizer step either inside the backward pass, each layer as soon as its
// gradient is complete (what the engine does), or in one pass over the flat buffer after it (what
// it does with a collective, and did before): tests/test_optimizers.py compares the two bit for
// bit.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "backends/cpu_executor.hpp"
#include "bindings/convert.hpp"
#include "model/engine.hpp"

namespace vaecpp {

namespace update_testing {

namespace py = pybind11;
using namespace py_convert;

// `epochs` epochs of shuffled minibatches of X from the initial weights, with the optimizer's step
// count starting at `first_step`; returns (params, m, v, step, grads of the last batch, how many
// parameters the last step stepped inside their layer's backward). keep_grads: the layers that
// step inside backward write their weight gradients too (else those parts of grads are stale).
template <typename T>
py::tuple train(const py::dict& config, const py::dict& optimizer, const Arr<T>& X, int batch_size,
                int epochs, bool update_in_backward, long first_step, bool keep_grads) {
    CpuExecutor<T>* ex = nullptr;
    Engine<T> e(vae_config(config), [&](Model<T>& m) {
        ex = new CpuExecutor<T>(m, update_in_backward, keep_grads);
        return std::unique_ptr<Executor<T>>(ex);
    });
    Model<T>& m = e.model;
    check_rows(X, m.D, "x");
    if (batch_size < 1 || epochs < 0) throw ValueError("batch_size >= 1 and epochs >= 0");
    m.opt.spec = opt_spec(optimizer);
    m.opt.reset(m.num_params());
    m.opt.step = first_step;
    {
        py::gil_scoped_release nogil;
        for (int k = 0; k < epochs; ++k)
            e.train_epoch(X.data(), X.shape(0), batch_size, true, k, {});
    }
    return py::make_tuple(to_numpy(m.params), to_numpy(m.opt.m), to_numpy(m.opt.v), m.opt.step,
                          to_numpy(m.grads), ex->stepped_in_layers());
}

}  // namespace update_testing

inline void bind_update_testing(pybind11::module_& m) {
    namespace py = pybind11;
    auto bind = [&](const char* name, auto tag) {
        using T = decltype(tag);
        m.def(name, &update_testing::train<T>, py::arg("config"), py::arg("optimizer"),
              py::arg("x"), py::arg("batch_size"), py::arg("epochs"),
              py::arg("update_in_backward"), py::arg("first_step") = 0,
              py::arg("keep_grads") = true);
    };
    bind("train_f32", float{});
    bind("train_f64", double{});
}

}  // namespace vaecpp
