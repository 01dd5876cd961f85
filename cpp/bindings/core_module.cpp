// vaecpp._core: the engine as Python sees it. Converts arrays and configuration, releases the GIL
// around heavy work, checks for Ctrl-C between batches, lets one call at a time use a model, and
// turns C++ errors into Python ones. Test and benchmark entry points live in testing_module.cpp.
#include <pybind11/functional.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>

#include "backends/cpu_executor.hpp"
#include "model/collective.hpp"
#include "bindings/convert.hpp"
#include "core/fp_mode.hpp"
#include "model/engine.hpp"
#ifdef VAECPP_CUDA
#include "backends/cuda/cuda_executor.hpp"
#endif

namespace py = pybind11;
using namespace vaecpp;
using namespace vaecpp::py_convert;

namespace {

py::dict sums_dict(const LossSums& s) {
    py::dict d;
    d["loss"] = s.loss;
    d["reconstruction_loss"] = s.rec;
    d["kl_loss"] = s.kl;
    d["n"] = s.n;
    return d;
}

// ---- one call at a time ------------------------------------------------------------------------
// A model's workspace belongs to the call that runs. A second call is refused with RuntimeError
// when it comes from another thread, or from inside a pass (a custom likelihood calling back into
// its model); between batches of a training call (the progress callback: Keras callbacks that
// decode or save) the same thread may run inference and saving, but not train.
struct CallState {
    std::thread::id owner;
    int depth = 0;
    bool between_batches = false;  // the running call waits in its progress callback
};

class CallGuard {
  public:
    // Runs with the GIL held, so the check and the claim cannot interleave with another thread's.
    CallGuard(CallState& st, const char* what, bool trains) : st_(st) {
        if (st.depth > 0) {
            const bool same = st.owner == std::this_thread::get_id();
            if (!same || !st.between_batches || trains)
                throw std::runtime_error(
                    std::string("this model is busy: ") + what + "() was called while another call " +
                    (same ? (st.between_batches ? "is training it (train inside a callback is not "
                                                  "allowed; inference and saving are)"
                                                : "is in the middle of a pass (e.g. from a custom "
                                                  "likelihood)")
                          : "runs on another thread") +
                    "; a model is used by one call at a time");
        }
        st.owner = std::this_thread::get_id();
        ++st.depth;
        saved_between_ = st.between_batches;
        st.between_batches = false;
    }
    ~CallGuard() {
        --st_.depth;
        st_.between_batches = saved_between_;
    }
    CallGuard(const CallGuard&) = delete;
    CallGuard& operator=(const CallGuard&) = delete;

  private:
    CallState& st_;
    bool saved_between_ = false;
};

// The binding's view of a model: the engine and its call state.
template <typename T>
struct PyModel {
    using value_type = T;
    Engine<T> engine;
    CallState calls;
    PyModel(const VaeConfig& c, const typename Engine<T>::MakeExecutor& make) : engine(c, make) {}
    Model<T>& model() { return engine.model; }
    const Model<T>& model() const { return engine.model; }
    void pull() { engine.executor().pull(); }
    void push() { engine.executor().push(); }
};

// During a distributed call, Ctrl-C only sets a flag (a C handler stands in for Python's), which
// the progress check turns into Python's interrupt at a step boundary, where every rank agrees on
// it (Next::interrupted); a flag left at the end is handed to Python then. Python's own handler
// could raise KeyboardInterrupt inside the all-reduce callback, in whichever thread the signal
// lands, leaving this rank out of the step while the others wait in the next collective.
std::atomic<bool> g_sigint{false};
extern "C" void flag_sigint(int) { g_sigint.store(true); }

struct SigintToFlag {
#if defined(__unix__) || defined(__APPLE__)
    bool active = false;
    struct sigaction old {};
    explicit SigintToFlag(bool on) {
        struct sigaction cur {};
        if (!on || sigaction(SIGINT, nullptr, &cur) != 0) return;
        if (!(cur.sa_flags & SA_SIGINFO) && (cur.sa_handler == SIG_IGN || cur.sa_handler == SIG_DFL))
            return;  // Ctrl-C ignored, or not Python's to handle: leave it so
        struct sigaction sa {};
        sa.sa_handler = flag_sigint;
        sigemptyset(&sa.sa_mask);
        active = sigaction(SIGINT, &sa, &old) == 0;
    }
    ~SigintToFlag() {
        if (!active) return;
        sigaction(SIGINT, &old, nullptr);
        if (g_sigint.exchange(false)) PyErr_SetInterrupt();
    }
#else
    explicit SigintToFlag(bool) {}
#endif
};

// Per batch: a clock read. Every 0.1 s (and at the end): take the GIL, honour Ctrl-C, report.
// In a data-parallel epoch (`shared`) a Ctrl-C or a Python error does not leave the loop at once:
// it is kept in `pending` and said to the other ranks at the next all-reduce, so that every rank
// stops after the same batch; the call then raises it on this rank (and KeyboardInterrupt on the
// others).
Progress progress_hook(py::object cb, CallState& st, bool shared,
                       std::shared_ptr<py::error_already_set>& pending) {
    using clock = std::chrono::steady_clock;
    auto last = std::make_shared<clock::time_point>(clock::now());
    return [cb, last, &st, shared, &pending](long done, long total, const LossSums& s) {
        auto now = clock::now();
        if (done < total && now - *last < std::chrono::milliseconds(100)) return Next::go_on;
        *last = now;
        py::gil_scoped_acquire gil;
        CallerFpMode caller_mode;  // the user's callbacks run in their own floating-point mode
        try {
            if (g_sigint.exchange(false)) PyErr_SetInterrupt();  // a Ctrl-C under SigintToFlag
            if (PyErr_CheckSignals() != 0) throw py::error_already_set();
            if (!cb.is_none()) {
                double n = double(std::max(s.n, 1L));
                st.between_batches = true;
                struct Reset {
                    CallState& st;
                    ~Reset() { st.between_batches = false; }
                } reset{st};
                py::object r = cb(done, total, s.loss / n, s.rec / n, s.kl / n);
                if (!r.is_none() && !r.cast<bool>()) return Next::stop;
            }
        } catch (py::error_already_set& e) {
            if (!shared) throw;
            pending = std::make_shared<py::error_already_set>(std::move(e));
            return Next::interrupted;
        }
        return Next::go_on;
    };
}

// Between chunks of inference: every 0.1 s take the GIL and honour Ctrl-C.
std::function<void()> interrupt_check() {
    using clock = std::chrono::steady_clock;
    auto last = std::make_shared<clock::time_point>(clock::now());
    return [last] {
        auto now = clock::now();
        if (now - *last < std::chrono::milliseconds(100)) return;
        *last = now;
        py::gil_scoped_acquire gil;
        CallerFpMode caller_mode;  // Python signal handlers run in the caller's mode
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    };
}

// A Collective over the caller's (rank, size, allreduce): allreduce(array) adds the ranks'
// arrays in place (e.g. mpi4py's comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)).
template <typename T>
Collective<T> collective(const py::tuple& dist) {
    if (dist.size() != 3) throw ValueError("distributed must be (rank, size, allreduce)");
    Collective<T> c;
    c.rank = dist[0].cast<int>();
    c.size = dist[1].cast<int>();
    if (c.size < 1 || c.rank < 0 || c.rank >= c.size)
        throw ValueError("distributed: rank must be in [0, size)");
    py::object fn = dist[2];
    c.sum = [fn](T* buf, long n) {
        py::gil_scoped_acquire gil;
        CallerFpMode caller_mode;
        py::array_t<T> view({n}, {long(sizeof(T))}, buf, py::none());  // no copy: the engine's buffer
        fn(view);
    };
    return c;
}

// Wraps a Python likelihood object (see vaecpp.Likelihood) as the engine's CustomLik: each call
// takes the GIL, passes copies of the engine's rows (the object may keep them) and checks what
// comes back.
template <typename T>
CustomLik<T> custom_likelihood(py::object obj, long D, long P) {
    auto copy = [](const T* p, long rows, long cols) { return py::array_t<T>({rows, cols}, p); };
    auto fetch = [](py::object r, T* out, std::vector<py::ssize_t> shape, const char* method) {
        auto a = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(r);
        std::vector<py::ssize_t> got;
        if (a) got.assign(a.shape(), a.shape() + a.ndim());
        if (!a || got != shape)
            throw ValueError(std::string("custom likelihood: ") + method + " must return an array of shape " +
                             shape_str(Shape(shape.begin(), shape.end())));
        const T* d = a.data();
        for (py::ssize_t i = 0; i < a.size(); ++i)
            if (!std::isfinite(d[i]))
                throw ValueError(std::string("custom likelihood: ") + method +
                                 " returned NaN or inf");
        std::copy(d, d + a.size(), out);
    };
    CustomLik<T> c;
    c.nll = [=](const T* x, const T* p, long R, T* out) {
        py::gil_scoped_acquire gil;
        CallerFpMode caller_mode;
        fetch(obj.attr("nll")(copy(x, R, D), copy(p, R, P * D)), out, {R}, "nll(x, params)");
    };
    c.grad = [=](const T* x, const T* p, long R, T* out) {
        py::gil_scoped_acquire gil;
        CallerFpMode caller_mode;
        fetch(obj.attr("grad")(copy(x, R, D), copy(p, R, P * D)), out, {R, P * D},
              "grad(x, params)");
    };
    c.mean = [=](const T* p, long R, T* out) {
        py::gil_scoped_acquire gil;
        CallerFpMode caller_mode;
        fetch(obj.attr("mean")(copy(p, R, P * D)), out, {R, D}, "mean(params)");
    };
    return c;
}

template <typename T>
py::list model_infos(const Model<T>& m, bool states) {
    py::list out;
    auto layers = m.all_layers();
    for (size_t i = 0; i < layers.size(); ++i)
        for (auto item : array_infos(states ? layers[i]->states() : layers[i]->weights(),
                                     layers[i]->name, int(i)))
            out.append(item);
    return out;
}

template <typename T>
PyModel<T>* make_cpu(const py::dict& d, py::object lik) {
    auto* v = new PyModel<T>(vae_config(d), [](Model<T>& m) {
        return std::unique_ptr<Executor<T>>(new CpuExecutor<T>(m));
    });
    v->engine.poll = interrupt_check();
    Model<T>& m = v->model();
    if (m.cfg.custom_params_per_dim > 0) m.custom = custom_likelihood<T>(lik, m.D, m.P);
    return v;
}

// Runs f(engine) with the GIL released, as the only call on the model.
template <typename V, typename F>
auto run(V& v, const char* what, bool trains, F&& f) {
    CallGuard guard(v.calls, what, trains);
    py::gil_scoped_release nogil;
    return f(v.engine);
}

// VaeF32 / VaeF64: one class per dtype, whatever the backend.
template <typename T>
void bind_model(py::module_& m, const char* name) {
    using V = PyModel<T>;
    py::class_<V>(m, name)
        .def(py::init([](const py::dict& d, py::object lik, int /*device*/) { return make_cpu<T>(d, lik); }),
             py::arg("config"), py::arg("likelihood") = py::none(), py::arg("device") = 0)
        .def_property_readonly("num_params", [](const V& v) { return v.model().num_params(); })
        .def_property_readonly("num_state", [](const V& v) { return long(v.model().state.size()); })
        .def_property("beta", [](const V& v) { return v.model().cfg.beta; },
                      [](V& v, double b) { v.model().cfg.beta = b; })
        .def_property("epsilon_std", [](const V& v) { return v.model().cfg.epsilon_std; },
                      [](V& v, double e) { v.model().cfg.epsilon_std = e; })
        .def_property("threads", [](const V& v) { return v.model().cfg.threads; },
                      [](V& v, long t) {
                          check_threads(t);
                          v.model().cfg.threads = int(t);
                      })
        .def("layers",
             [](const V& v) {
                 py::list out;
                 for (auto* l : v.model().all_layers())
                     out.append(py::make_tuple(l->name, l->kind(), py::tuple(py::cast(l->out_shape)),
                                               l->num_params()));
                 return out;
             })
        .def("weight_info", [](const V& v) { return model_infos(v.model(), false); })
        .def("state_info", [](const V& v) { return model_infos(v.model(), true); })
        .def("get_params", [](V& v) {
            CallGuard g(v.calls, "get_params", false);
            v.pull();
            return to_numpy(v.model().params);
        })
        .def("set_params", [](V& v, const Arr<T>& a) {
            CallGuard g(v.calls, "set_params", true);
            v.pull();
            from_numpy(v.model().params, a, "params");
            v.push();
        })
        .def("get_state", [](V& v) {
            CallGuard g(v.calls, "get_state", false);
            return to_numpy(v.model().state);
        })
        .def("set_state", [](V& v, const Arr<T>& a) {
            CallGuard g(v.calls, "set_state", true);
            from_numpy(v.model().state, a, "state");
        })
        .def("set_optimizer",
             [](V& v, const py::dict& d) {
                 CallGuard g(v.calls, "set_optimizer", true);
                 v.pull();
                 auto& opt = v.model().opt;
                 opt.spec = opt_spec(d);
                 opt.reset(v.model().num_params());
                 v.push();
             })
        .def("set_learning_rate", [](V& v, double lr) { v.model().opt.spec.learning_rate = lr; })
        .def_property("step", [](const V& v) { return v.model().opt.step; },
                      [](V& v, long s) { v.model().opt.step = s; })
        .def("get_optimizer_slots",
             [](V& v) {
                 CallGuard g(v.calls, "get_optimizer_slots", false);
                 v.pull();
                 auto& opt = v.model().opt;
                 return py::make_tuple(to_numpy(opt.m), to_numpy(opt.v), to_numpy(opt.ema));
             })
        // ema empty with use_ema: the average starts as the current weights
        .def("set_optimizer_slots",
             [](V& v, const Arr<T>& m1, const Arr<T>& m2, const Arr<T>& avg) {
                 CallGuard g(v.calls, "set_optimizer_slots", true);
                 v.pull();
                 auto& model = v.model();
                 auto& opt = model.opt;
                 from_numpy(opt.m, m1, "optimizer slot m");
                 from_numpy(opt.v, m2, "optimizer slot v");
                 if (opt.spec.use_ema && avg.size() == 0)
                     opt.ema.assign(model.params.begin(), model.params.end());
                 else
                     from_numpy(opt.ema, avg, "optimizer slot ema");
                 v.push();
             })
        // Keras's finalize_variable_values: the weights become their moving average (use_ema)
        .def("finalize_average",
             [](V& v) {
                 CallGuard g(v.calls, "finalize_average", true);
                 v.pull();
                 auto& model = v.model();
                 if (!model.opt.spec.use_ema || model.opt.ema.size() != model.params.size()) return;
                 std::copy(model.opt.ema.begin(), model.opt.ema.end(), model.params.begin());
                 v.push();
             })
        .def("train_epoch",
             [](V& v, const Arr<T>& X, int batch_size, bool shuffle, long epoch, py::object cb,
                std::optional<py::tuple> dist) {
                 check_rows(X, v.model().D, "x");
                 if (batch_size < 1) throw ValueError("batch_size must be >= 1");
                 std::optional<Collective<T>> coll;
                 if (dist) coll = collective<T>(*dist);
                 SigintToFlag sigint_guard{coll.has_value()};
                 std::shared_ptr<py::error_already_set> pending;
                 Progress hook = progress_hook(cb, v.calls, bool(coll), pending);
                 try {
                     return sums_dict(run(v, "train_epoch", true, [&](Engine<T>& e) {
                         return e.train_epoch(X.data(), X.shape(0), batch_size, shuffle, epoch,
                                              hook, coll ? &*coll : nullptr);
                     }));
                 } catch (const Interrupted&) {
                     if (pending) throw *pending;  // this rank's own Ctrl-C or error
                     throw;                        // another rank's: KeyboardInterrupt here
                 }
             },
             py::arg("x"), py::arg("batch_size"), py::arg("shuffle"), py::arg("epoch"),
             py::arg("progress") = py::none(), py::arg("distributed") = py::none())
        // distributed=(rank, size, allreduce) as train_epoch's: x is rows [first, first + n) of
        // a global batch of `total` rows (n may be 0); interrupted=True stops every rank before
        // this batch's update (each raises Interrupted).
        .def("train_batch",
             [](V& v, const Arr<T>& X, long batch, std::optional<py::tuple> dist, long first,
                long total, bool interrupted) {
                 check_rows(X, v.model().D, "x");
                 const long B = X.shape(0);
                 std::optional<Collective<T>> coll;
                 if (dist) coll = collective<T>(*dist);
                 SigintToFlag sigint_guard{coll.has_value()};
                 if (!coll && B < 1) throw ValueError("x is an empty batch");
                 if (coll && (first < 0 || total < 1 || first + B > total))
                     throw ValueError("distributed: x must be rows [first, first + len(x)) of a "
                                      "batch of total >= 1 rows");
                 const Rows rows{int(B), coll ? first : 0, coll ? total : 0};
                 const Next next = interrupted ? Next::interrupted : Next::go_on;
                 return sums_dict(run(v, "train_batch", true, [&](Engine<T>& e) {
                     return e.train_batch(X.data(), rows, batch, coll ? &*coll : nullptr, next);
                 }));
             },
             py::arg("x"), py::arg("batch") = 0, py::arg("distributed") = py::none(),
             py::arg("first") = 0, py::arg("total") = 0, py::arg("interrupted") = false)
        .def("evaluate",
             [](V& v, const Arr<T>& X, int batch_size, long first) {
                 check_rows(X, v.model().D, "x");
                 if (batch_size < 1) throw ValueError("batch_size must be >= 1");
                 if (first < 0) throw ValueError("first must be >= 0");
                 return sums_dict(run(v, "evaluate", false, [&](Engine<T>& e) {
                     return e.evaluate(X.data(), X.shape(0), batch_size, first);
                 }));
             },
             py::arg("x"), py::arg("batch_size"), py::arg("first") = 0)
        .def("gradients",
             [](V& v, const Arr<T>& X, std::optional<Arr<T>> eps) {
                 const Model<T>& mv = v.model();
                 check_rows(X, mv.D, "x");
                 if (eps) {
                     check_rows(*eps, mv.L, "eps");
                     if (eps->shape(0) != X.shape(0) * mv.K())
                         throw ValueError("eps must have one row per sample and importance draw");
                 }
                 py::array_t<T> g(mv.num_params());
                 T* gp = g.mutable_data();
                 const T* ep = eps ? eps->data() : nullptr;
                 LossSums s = run(v, "gradients", true, [&](Engine<T>& e) {
                     return e.gradients(X.data(), X.shape(0), ep, gp);
                 });
                 return py::make_tuple(sums_dict(s), g);
             })
        .def("encode",
             [](V& v, const Arr<T>& X) {
                 const py::ssize_t L = v.model().L;
                 check_rows(X, v.model().D, "x");
                 py::array_t<T> mu({X.shape(0), L}), lv({X.shape(0), L});
                 T* mp = mu.mutable_data();
                 T* lp = lv.mutable_data();
                 run(v, "encode", false, [&](Engine<T>& e) { e.encode(X.data(), X.shape(0), mp, lp); });
                 return py::make_tuple(mu, lv);
             })
        .def("decode",
             [](V& v, const Arr<T>& Z, bool raw) {
                 const Model<T>& mv = v.model();
                 check_rows(Z, mv.L, "z");
                 py::array_t<T> out({Z.shape(0), py::ssize_t(raw ? mv.P * mv.D : mv.D)});
                 T* op = out.mutable_data();
                 run(v, "decode", false, [&](Engine<T>& e) { e.decode(Z.data(), Z.shape(0), op, raw); });
                 return out;
             },
             py::arg("z"), py::arg("raw") = false)
        .def("log_likelihood", [](V& v, const Arr<T>& X, long k) {
            check_rows(X, v.model().D, "x");
            if (k < 1) throw ValueError("k must be >= 1");
            py::array_t<T> out(X.shape(0));
            T* op = out.mutable_data();
            run(v, "log_likelihood", false, [&](Engine<T>& e) { e.log_likelihood(X.data(), X.shape(0), k, op); });
            return out;
        });
}

py::tuple names(const char* const* first, int n) {
    return py::tuple(py::cast(std::vector<std::string>(first, first + n)));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "vaecpp's C++ engine (private: use the vaecpp package)";
    py::register_exception<NonFiniteLoss>(m, "NonFiniteLoss", PyExc_FloatingPointError);
    py::register_exception<Interrupted>(m, "Interrupted", PyExc_KeyboardInterrupt);
    bind_model<float>(m, "VaeF32");
    bind_model<double>(m, "VaeF64");
#ifdef VAECPP_CUDA
    // The same model class as VaeF32, with the CUDA backend under the shared loop. CudaError is a
    // std::runtime_error: pybind11 raises it as RuntimeError with CUDA's message.
    m.def("VaeCudaF32", [](const py::dict& d, py::object /*likelihood: refused by the backend*/, int device) {
        auto* v = new PyModel<float>(vae_config(d), [device](Model<float>& model) {
            return std::unique_ptr<Executor<float>>(new cuda::CudaExecutor(model, device));
        });
        v->engine.poll = interrupt_check();
        return v;
    }, py::arg("config"), py::arg("likelihood") = py::none(), py::arg("device") = 0,
       py::return_value_policy::take_ownership);
    m.def("cuda_device_count", &cuda::device_count,
          "Number of CUDA devices the driver reports (0 without a driver or device).");
#endif
    m.def("max_threads", &max_threads);
    // Denormals flushed to zero in the engine's threads during each call (core/fp_mode.hpp).
    m.def("set_flush_denormal", &set_flush_denormal, py::arg("flag"));
    m.def("flush_denormal", &flush_denormal);
    m.def("flush_denormal_supported", &flush_denormal_supported);
    // The engine's vocabularies, so that Python checks and documents names from one list.
    m.attr("ACTIVATIONS") = names(kActNames, kNumActs);
    m.attr("LIKELIHOODS") = names(kLikNames, kNumLiks);
    m.attr("OPTIMIZERS") = names(kOptNames, kNumOpts);
    m.def("likelihood_params_per_dim", [](const std::string& name, double laplace_scale) {
        LikSpec s;
        s.kind = lik_from_name(name);
        s.laplace_scale = laplace_scale;
        return s.params_per_dim();
    }, py::arg("name"), py::arg("laplace_scale") = 0.0,
       "Decoder outputs per data dimension of a built-in likelihood.");
    m.def("build_info", []() {
        py::dict d;
        d["openmp"] = have_openmp();
#ifdef VAECPP_CUDA
        d["cuda"] = true;
        d["cuda_gemm"] = cuda::blas_is_cublas() ? "cublas" : "tiled";
#else
        d["cuda"] = false;
#endif
        d["fast_gemm"] = have_fast_gemm();
        d["gemm_kernels"] = gemm_kernels_name();    // the set picked for this CPU (kernels/gemm.hpp)
        d["gemm_blocking"] = gemm_blocking_info();  // register tile and cache blocks
        d["elementwise_kernels"] = elementwise_kernels_name();  // kernels/elementwise_dispatch.hpp
        d["cpu_caches"] = std::map<std::string, long>{{"l1d", cpu_caches().l1d}, {"l2", cpu_caches().l2}};
        d["cpu_caches_source"] = std::string(cpu_caches().source);
        d["eigen"] = std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) +
                     "." + std::to_string(EIGEN_MINOR_VERSION);
        d["compiler"] = std::string(__VERSION__);
        py::list feats;
#ifdef __SSE4_2__
        feats.append("sse4.2");
#endif
#ifdef __AVX__
        feats.append("avx");
#endif
#ifdef __AVX2__
        feats.append("avx2");
#endif
#ifdef __FMA__
        feats.append("fma");
#endif
#ifdef __AVX512F__
        feats.append("avx512f");
#endif
        d["simd"] = feats;
#ifdef VAECPP_NATIVE
        d["native"] = true;
#else
        d["native"] = false;
#endif
        return d;
    });
}
