// vaecpp._testing: the engine's pieces in isolation, for the tests and benchmarks (not imported by
// the vaecpp package): single layers with their gradients, likelihoods, the KL term, optimizer
// steps, the fast kernels beside their readable references, the random draws and a GEMM timer.
#include <chrono>
#include <optional>

#include "bindings/convert.hpp"
#include "bindings/fp_mode_testing.hpp"
#include "bindings/gemm_bench.hpp"
#include "bindings/gemm_v4_on_avx2_testing.hpp"
#include "bindings/step_profile.hpp"
#include "bindings/update_testing.hpp"
#include "kernels/kl.hpp"

namespace py = pybind11;
using namespace vaecpp;
using namespace vaecpp::py_convert;

namespace {

// ---- test harness: single layers, likelihoods, KL and optimizers in isolation (float64) -------
struct LayerHarness {
    LayerPtr<double> layer;
    std::vector<double> params, grads, state;
    Philox rng;
    LayerHarness(const py::dict& cfg, const Shape& in, uint64_t seed) : rng{seed} {
        layer = make_layer<double>(layer_config(cfg), in);
        params.assign(layer->num_params(), 0.0);
        grads.assign(layer->num_params(), 0.0);
        state.assign(layer->num_state(), 0.0);
        layer->params = params.data();
        layer->grads = grads.data();
        layer->state = state.data();
        layer->init(rng, stream_id(Purpose::init, 0));
    }
    Ctx ctx(bool training, uint64_t step) const {
        Ctx c;
        c.training = training;
        c.rng = &rng;
        c.step = step;
        return c;
    }
    py::array_t<double> forward(const Arr<double>& x, bool training, uint64_t step) {
        check_rows(x, layer->in_size(), "x");
        const int B = int(x.shape(0));
        py::array_t<double> out({py::ssize_t(B), py::ssize_t(layer->out_size())});
        layer->forward(out.mutable_data(), x.data(), B, ctx(training, step));
        return out;
    }
    // Runs forward then backward with dout; returns (dinp, dparams) (grads zeroed first).
    py::tuple backward(const Arr<double>& x, const Arr<double>& dout, bool training, uint64_t step) {
        check_rows(x, layer->in_size(), "x");
        check_rows(dout, layer->out_size(), "dout");
        const int B = int(x.shape(0));
        std::vector<double> out(size_t(B) * layer->out_size());
        std::vector<double> g(dout.data(), dout.data() + dout.size());
        layer->forward(out.data(), x.data(), B, ctx(training, step));
        std::fill(grads.begin(), grads.end(), 0.0);
        py::array_t<double> dinp({py::ssize_t(B), py::ssize_t(layer->in_size())});
        layer->backward(dinp.mutable_data(), g.data(), x.data(), out.data(), B, ctx(training, step));
        return py::make_tuple(dinp, to_numpy(grads));
    }
};

void bind_harness(py::module_& m) {
    py::class_<LayerHarness>(m, "LayerHarness")
        .def(py::init<const py::dict&, const Shape&, uint64_t>(), py::arg("config"),
             py::arg("input_shape"), py::arg("seed") = 0)
        .def_property_readonly("out_shape", [](const LayerHarness& h) { return h.layer->out_shape; })
        .def_property_readonly("kind", [](const LayerHarness& h) { return h.layer->kind(); })
        .def("weight_info", [](const LayerHarness& h) { return array_infos(h.layer->weights(), h.layer->name); })
        .def("state_info", [](const LayerHarness& h) { return array_infos(h.layer->states(), h.layer->name); })
        .def("get_params", [](const LayerHarness& h) { return to_numpy(h.params); })
        .def("set_params", [](LayerHarness& h, const Arr<double>& a) { from_numpy(h.params, a, "params"); })
        .def("get_state", [](const LayerHarness& h) { return to_numpy(h.state); })
        .def("set_state", [](LayerHarness& h, const Arr<double>& a) { from_numpy(h.state, a, "state"); })
        .def("forward", &LayerHarness::forward, py::arg("x"), py::arg("training") = false, py::arg("step") = 0)
        .def("backward", &LayerHarness::backward, py::arg("x"), py::arg("dout"),
             py::arg("training") = false, py::arg("step") = 0);

    m.def("lik_nll", [](const py::dict& spec, const Arr<double>& x, const Arr<double>& p) {
        LikSpec s = lik_spec(spec);
        const int B = int(x.shape(0)), D = int(x.shape(1));
        check_rows(p, long(s.params_per_dim()) * D, "params");
        py::array_t<double> nll(B);
        lik_nll(nll.mutable_data(), x.data(), p.data(), B, D, s);
        return nll;
    });
    m.def("lik_grad", [](const py::dict& spec, const Arr<double>& x, const Arr<double>& p) {
        LikSpec s = lik_spec(spec);
        const int B = int(x.shape(0)), D = int(x.shape(1));
        check_rows(p, long(s.params_per_dim()) * D, "params");
        py::array_t<double> g({py::ssize_t(B), py::ssize_t(p.shape(1))});
        lik_grad(g.mutable_data(), x.data(), p.data(), B, D, s, 1.0);
        return g;
    });
    m.def("lik_mean", [](const py::dict& spec, const Arr<double>& p, int D) {
        LikSpec s = lik_spec(spec);
        const int B = int(p.shape(0));
        check_rows(p, long(s.params_per_dim()) * D, "params");
        py::array_t<double> out({py::ssize_t(B), py::ssize_t(D)});
        lik_mean(out.mutable_data(), p.data(), B, D, s);
        return out;
    });
    m.def("kl", [](const Arr<double>& mu, const Arr<double>& lv, double prior_std) {
        const int B = int(mu.shape(0)), L = int(mu.shape(1));
        check_rows(lv, L, "log_var");
        py::array_t<double> kl(B);
        kl_forward(kl.mutable_data(), mu.data(), lv.data(), B, L, prior_std);
        return kl;
    });
    m.def("kl_grad", [](const Arr<double>& mu, const Arr<double>& lv, double prior_std) {
        const int B = int(mu.shape(0)), L = int(mu.shape(1));
        py::array_t<double> dmu({B, L}), dlv({B, L});
        std::fill(dmu.mutable_data(), dmu.mutable_data() + dmu.size(), 0.0);
        std::fill(dlv.mutable_data(), dlv.mutable_data() + dlv.size(), 0.0);
        kl_backward(dmu.mutable_data(), dlv.mutable_data(), mu.data(), lv.data(), long(B) * L, prior_std, 1.0);
        return py::make_tuple(dmu, dlv);
    });
}

// ---- fast kernels next to their references, for tests and benchmarks -----------------------------
// Each takes fast=True (the engine's kernel) or False (the readable reference) and a thread count.
template <typename T>
void bind_kernels_for(py::module_& k) {
    using A = Arr<T>;
    k.def("dense_forward",
          [](const A& x, const A& W, const A& b, const std::string& act, bool fast, int threads) {
              check_rows(W, b.size(), "W");
              check_rows(x, W.shape(0), "x");
              const int B = int(x.shape(0)), C = int(W.shape(0)), OC = int(W.shape(1));
              py::array_t<T> out({B, OC});
              use_threads(threads);
              (fast ? dense_forward<T> : dense_forward_ref<T>)(out.mutable_data(), x.data(), W.data(),
                                                               b.data(), B, C, OC, act_from_name(act));
              return out;
          },
          py::arg("x"), py::arg("W"), py::arg("b"), py::arg("activation"), py::arg("fast") = true,
          py::arg("threads") = 1);
    // Runs the forward pass, then backward with dout, accumulating into copies of dW0 / db0 /
    // dinp0 (dinp0 only when accumulate_dinp; dW0, db0 only when accumulate_grads); returns
    // (dinp, dW, db).
    k.def("dense_backward",
          [](const A& x, const A& W, const A& b, const A& dout, const std::string& act, const A& dW0,
             const A& db0, const A& dinp0, bool accumulate_dinp, bool fast, int threads,
             bool accumulate_grads) {
              const int B = int(x.shape(0)), C = int(W.shape(0)), OC = int(W.shape(1));
              check_rows(x, C, "x");
              check_rows(dout, OC, "dout");
              const Act a = act_from_name(act);
              std::vector<T> y(size_t(B) * OC), g(dout.data(), dout.data() + dout.size());
              use_threads(threads);
              dense_forward_ref(y.data(), x.data(), W.data(), b.data(), B, C, OC, a);
              py::array_t<T> dinp({B, C}), dW({C, OC}), db(OC);
              std::copy(dW0.data(), dW0.data() + long(C) * OC, dW.mutable_data());
              std::copy(db0.data(), db0.data() + OC, db.mutable_data());
              std::copy(dinp0.data(), dinp0.data() + long(B) * C, dinp.mutable_data());
              if (fast)
                  dense_backward<T>(dinp.mutable_data(), dW.mutable_data(), db.mutable_data(),
                                    g.data(), x.data(), y.data(), W.data(), B, C, OC, a,
                                    accumulate_dinp, accumulate_grads);
              else
                  dense_backward_ref<T>(dinp.mutable_data(), dW.mutable_data(), db.mutable_data(),
                                        g.data(), x.data(), y.data(), W.data(), B, C, OC, a,
                                        accumulate_dinp, accumulate_grads);
              return py::make_tuple(dinp, dW, db);
          },
          py::arg("x"), py::arg("W"), py::arg("b"), py::arg("dout"), py::arg("act"), py::arg("dW0"),
          py::arg("db0"), py::arg("dinp0"), py::arg("accumulate_dinp"), py::arg("fast"),
          py::arg("threads"), py::arg("accumulate_grads") = true);
    // C (+)= op(A) @ op(B) through the engine's product (fast) or Eigen (reference); C0 is the
    // starting C when accumulating. gemm_v4_on_avx2: through the AVX-512 set's source on AVX2.
    using GemmFn = void (*)(long, long, long, const T*, long, long, const T*, long, bool, T*, long, bool);
    auto product = [](GemmFn f, const A& a, const A& b, const A& c0, bool trans_a, bool trans_b,
                      bool accumulate) {
        if (a.ndim() != 2 || b.ndim() != 2) throw ValueError("A and B must be matrices");
        const long M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
        const long N = trans_b ? b.shape(0) : b.shape(1);
        if ((trans_b ? b.shape(1) : b.shape(0)) != K) throw ValueError("inner dimensions differ");
        check_rows(c0, N, "C0");
        if (c0.shape(0) != M) throw ValueError("C0 must be (M, N)");
        py::array_t<T> c({M, N});
        std::copy(c0.data(), c0.data() + M * N, c.mutable_data());
        const long sai = trans_a ? 1 : a.shape(1), sak = trans_a ? a.shape(1) : 1;
        f(M, N, K, a.data(), sai, sak, b.data(), b.shape(1), trans_b, c.mutable_data(), N, accumulate);
        return c;
    };
    k.def("gemm", [product](const A& a, const A& b, const A& c0, bool trans_a, bool trans_b,
                            bool accumulate, bool fast) {
        return product(fast ? gemm<T> : gemm_ref<T>, a, b, c0, trans_a, trans_b, accumulate);
    });
    k.def("gemm_v4_on_avx2", [product](const A& a, const A& b, const A& c0, bool trans_a,
                                       bool trans_b, bool accumulate) {
        return product(gemm_with_v4_on_avx2<T>, a, b, c0, trans_a, trans_b, accumulate);
    });
    // C = op(A) @ B through gemm_then_rows, and what its rows() callback saw: seen holds each
    // element of C as it was handed to rows(), visits how often it was handed; c is C after the
    // call (left zero where gemm_then_rows did not write it: keep_c false).
    k.def("gemm_then_rows", [](const A& a, const A& b, bool trans_a, bool keep_c) {
        if (a.ndim() != 2 || b.ndim() != 2) throw ValueError("A and B must be matrices");
        const long M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
        const long N = b.shape(1);
        if (b.shape(0) != K) throw ValueError("inner dimensions differ");
        py::array_t<T> c({M, N}), seen({M, N});
        py::array_t<int> visits({M, N});
        T* C = c.mutable_data();
        T* S = seen.mutable_data();
        int* V = visits.mutable_data();
        std::fill(C, C + M * N, T(0));
        std::fill(S, S + M * N, T(0));
        std::fill(V, V + M * N, 0);
        const long sai = trans_a ? 1 : a.shape(1), sak = trans_a ? a.shape(1) : 1;
        gemm_then_rows<T>(M, N, K, a.data(), sai, sak, b.data(), N, C, N, keep_c,
                          [&](long i, long r, long j, long n, const T* ct, long ldt) {
                              for (long u = 0; u < r; ++u)
                                  for (long v = 0; v < n; ++v) {
                                      S[(i + u) * N + j + v] = ct[u * ldt + v];
                                      ++V[(i + u) * N + j + v];
                                  }
                          });
        return py::make_tuple(c, seen, visits);
    }, py::arg("a"), py::arg("b"), py::arg("trans_a"), py::arg("keep_c") = true);
    k.def("act_forward", [](const A& x, const std::string& act, bool fast, int threads) {
        py::array_t<T> out(x.size());
        use_threads(threads);
        (fast ? act_forward<T> : act_forward_ref<T>)(out.mutable_data(), x.data(), long(x.size()),
                                                     act_from_name(act));
        return out;
    });
    k.def("act_backward", [](const A& dout, const A& y, const std::string& act, bool fast, int threads) {
        py::array_t<T> dx(dout.size());
        use_threads(threads);
        (fast ? act_backward<T> : act_backward_ref<T>)(dx.mutable_data(), dout.data(), y.data(),
                                                       long(dout.size()), act_from_name(act));
        return dx;
    });
    // Bernoulli: (nll, dp) with dp = w * dnll/dlogits.
    k.def("bernoulli_nll_grad", [](const A& x, const A& l, double w, bool fast, int threads) {
        const int B = int(x.shape(0)), D = int(x.shape(1));
        check_rows(l, D, "logits");
        py::array_t<T> nll(B), dp({B, D});
        LikSpec s;
        use_threads(threads);
        if (fast) {
            bernoulli_nll_grad(nll.mutable_data(), dp.mutable_data(), x.data(), l.data(), B, D, T(w));
        } else {
            lik_nll(nll.mutable_data(), x.data(), l.data(), B, D, s);
            lik_grad(dp.mutable_data(), x.data(), l.data(), B, D, s, T(w));
        }
        return py::make_tuple(nll, dp);
    });
    k.def("bernoulli_mean", [](const A& l, bool fast, int threads) {
        const int B = int(l.shape(0)), D = int(l.shape(1));
        py::array_t<T> out({B, D});
        LikSpec s;
        use_threads(threads);
        (fast ? lik_mean_fast<T> : lik_mean<T>)(out.mutable_data(), l.data(), B, D, s);
        return out;
    });
    // `steps` optimizer updates of p0 with the gradients gs (steps, n) through the engine's update;
    // `ranges` are the weight arrays' (offset, size) for clipnorm (default: one array).
    k.def("optimizer_run",
          [](const py::dict& spec, const A& p0, const A& gs,
             std::optional<std::vector<std::pair<long, long>>> ranges, int threads) {
              Optimizer<T> opt;
              opt.spec = opt_spec(spec);
              const long n = long(p0.size());
              opt.reset(n);
              check_rows(gs, n, "grads");
              const std::vector<std::pair<long, long>> r = ranges ? *ranges : std::vector<std::pair<long, long>>{{0, n}};
              py::array_t<T> p(n);
              std::copy(p0.data(), p0.data() + n, p.mutable_data());
              use_threads(threads);
              for (long s = 0; s < gs.shape(0); ++s) {
                  std::vector<T> g(gs.data() + s * n, gs.data() + (s + 1) * n);
                  opt.update(p.mutable_data(), g.data(), n, r);
              }
              return p;
          },
          py::arg("spec"), py::arg("p0"), py::arg("grads"), py::arg("ranges") = py::none(),
          py::arg("threads") = 1);
}

void bind_kernels(py::module_& m) {
    auto k = m.def_submodule("kernels", "fast kernels and their references (for tests)");
    bind_kernels_for<float>(k);
    bind_kernels_for<double>(k);
    // Draws of the engine's counter-based generator, so tests can reproduce the noise exactly:
    // scale * N(0, 1) numbers first .. first + n - 1 of a stream; fast: the paired draws the
    // engine uses (CpuExecutor::draw_eps), else one number at a time (the reference).
    k.def("normals", [](uint64_t seed, int purpose, uint64_t stream, uint64_t first, long n,
                        double scale, bool fast) {
        Philox rng{seed};
        py::array_t<double> out(n);
        double* o = out.mutable_data();
        const uint64_t sid = stream_id(Purpose(purpose), stream);
        if (fast)
            rng.normals(o, sid, first, n, scale);
        else
            for (long i = 0; i < n; ++i) o[i] = scale * rng.normal(sid, first + i);
        return out;
    }, py::arg("seed"), py::arg("purpose"), py::arg("stream"), py::arg("first"), py::arg("n"),
       py::arg("scale") = 1.0, py::arg("fast") = true);
}

}  // namespace

PYBIND11_MODULE(_testing, m) {
    m.doc() = "vaecpp's engine pieces for tests and benchmarks (private)";
    bind_harness(m);
    bind_kernels(m);
    bind_update_testing(m);  // train_f32 / train_f64: the optimizer step in or after backward
    // Seconds per step of each kind of work of an MLP VAE's training step (step_profile.hpp).
    m.def("step_profile", [](int B, int D, const std::vector<int>& hidden, int latent, int threads,
                             int steps, bool per_layer) {
        py::gil_scoped_release nogil;
        return profile_mlp_step(B, D, hidden, latent, threads, steps, per_layer);
    }, py::arg("batch"), py::arg("input_dim"), py::arg("hidden"), py::arg("latent"),
       py::arg("threads") = 1, py::arg("steps") = 20, py::arg("per_layer") = true);
    // The floating-point mode register (x86-64: MXCSR) of this thread, and of an OpenMP team's.
    m.def("fp_bits", &fp_mode::get, "this thread's floating-point mode register");
    m.def("set_fp_bits", [](uint64_t b) { fp_mode::set(fp_mode::Bits(b)); });
    m.def("team_fp_bits", &team_fp_bits, "each OpenMP team thread's mode register",
          py::arg("threads"), py::arg("scoped"), py::arg("grow"));
    // GFLOP/s of the best of `reps` (n,n) @ (n,n) float32 products with `threads` threads: the
    // machine's large-GEMM rate the benchmarks compare against. kernel="engine": the product the
    // dense layers use (gemm.hpp, columns split between threads as they do); "eigen": Eigen's
    // own multi-threaded product.
    m.def("gemm_bench", [](int n, int reps, int threads, const std::string& kernel) {
        if (n < 1 || reps < 1 || threads < 1) throw ValueError("n, reps and threads must be >= 1");
        if (kernel != "engine" && kernel != "eigen")
            throw ValueError("kernel must be 'engine' or 'eigen'");
        py::gil_scoped_release nogil;
        use_threads(threads);
        Mat<float> A = Mat<float>::Random(n, n), B = Mat<float>::Random(n, n), C(n, n);
        auto run = [&] {
            if (kernel == "eigen") {
                C.noalias() = A * B;
                return;
            }
            parallel_parts(n, threads, 16, [&](long j0, long j1) {
                gemm<float>(n, j1 - j0, n, A.data(), n, 1, B.data() + j0, n, false, C.data() + j0, n,
                            false);
            });
        };
        run();  // warm-up: page in, spin up the thread team
        double best = 1e300;
        for (int r = 0; r < reps; ++r) {
            auto t0 = std::chrono::steady_clock::now();
            run();
            best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        return 2.0 * double(n) * n * n / best * 1e-9;
    }, py::arg("n") = 2048, py::arg("reps") = 5, py::arg("threads") = 1, py::arg("kernel") = "engine");
    // GFLOP/s of one product of a (B, C) -> (B, OC) Dense layer ("forward", "dW" or "dX"), split
    // between threads as the layer splits it (gemm_bench.hpp).
    m.def("gemm_layer_bench", [](const std::string& layout, int B, int C, int OC, int reps,
                                 int threads, const std::string& kernel) {
        py::gil_scoped_release nogil;
        return gemm_layer_rate(layout, B, C, OC, reps, threads, kernel);
    }, py::arg("layout"), py::arg("B"), py::arg("C"), py::arg("OC"), py::arg("reps") = 20,
       py::arg("threads") = 1, py::arg("kernel") = "engine");
}
