// The only file that knows about Python: converts arrays and configuration, releases the GIL
// around heavy work, checks for Ctrl-C between batches and turns C++ errors into Python ones.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>

#include "fp_mode_testing.hpp"
#include "step_profile.hpp"
#include "vae.hpp"
#ifdef VAECPP_CUDA
#include "cuda/vae_cuda.hpp"
#endif

namespace py = pybind11;
using namespace vaecpp;

namespace {

template <typename T>
using Arr = py::array_t<T, py::array::c_style>;

LayerConfig layer_config(const py::dict& d) {
    LayerConfig c;
    for (auto item : d) {
        std::string key = py::str(item.first);
        if (key == "kind")
            c.kind = py::str(item.second);
        else if (py::isinstance<py::str>(item.second))
            c.str[key] = py::str(item.second);
        else
            c.num[key] = item.second.cast<double>();
    }
    return c;
}

VaeConfig vae_config(const py::dict& d) {
    VaeConfig c;
    c.input_shape = d["input_shape"].cast<Shape>();
    c.latent_dim = d["latent_dim"].cast<int>();
    for (auto l : d["encoder"].cast<py::list>()) c.encoder.push_back(layer_config(l.cast<py::dict>()));
    for (auto l : d["decoder"].cast<py::list>()) c.decoder.push_back(layer_config(l.cast<py::dict>()));
    c.lik.kind = lik_from_name(d["likelihood"].cast<std::string>());
    c.lik.loc_act = act_from_name(d["output_activation"].cast<std::string>());
    c.lik.log_var_clip = d["log_var_clip"].cast<double>();
    c.lik.laplace_scale = d["laplace_scale"].cast<double>();
    c.lik.mean_reduction = d["reduction"].cast<std::string>() == "mean";
    c.beta = d["beta"].cast<double>();
    c.epsilon_std = d["epsilon_std"].cast<double>();
    c.prior_std = d["prior_std"].cast<double>();
    c.seed = d["seed"].cast<uint64_t>();
    c.threads = d["threads"].cast<int>();
    if (d.contains("iwae_k")) c.iwae_k = d["iwae_k"].cast<int>();
    if (d.contains("objective")) c.iwae = d["objective"].cast<std::string>() == "iwae";
    if (d.contains("custom_params_per_dim"))
        c.custom_params_per_dim = d["custom_params_per_dim"].cast<int>();
    return c;
}

OptSpec opt_spec(const py::dict& d) {
    OptSpec s;
    s.kind = opt_from_name(d["name"].cast<std::string>());
    auto num = [&](const char* k, double& v) {
        if (d.contains(k)) v = d[k].cast<double>();
    };
    num("learning_rate", s.learning_rate);
    num("beta_1", s.beta_1);
    num("beta_2", s.beta_2);
    num("epsilon", s.epsilon);
    num("momentum", s.momentum);
    num("rho", s.rho);
    num("initial_accumulator_value", s.initial_accumulator_value);
    num("clipnorm", s.clipnorm);
    num("clipvalue", s.clipvalue);
    num("weight_decay", s.weight_decay);
    if (d.contains("nesterov")) s.nesterov = d["nesterov"].cast<bool>();
    return s;
}

py::dict sums_dict(const LossSums& s) {
    py::dict d;
    d["loss"] = s.loss;
    d["reconstruction_loss"] = s.rec;
    d["kl_loss"] = s.kl;
    d["n"] = s.n;
    return d;
}

template <typename T>
void check_rows(const Arr<T>& a, long cols, const char* what) {
    if (a.ndim() != 2 || a.shape(1) != cols)
        throw ValueError(std::string(what) + " must have shape (n, " + std::to_string(cols) + ")");
}

// Per batch: a clock read. Every 0.1 s (and at the end): take the GIL, honour Ctrl-C, report.
Progress progress_hook(py::object cb) {
    using clock = std::chrono::steady_clock;
    auto last = std::make_shared<clock::time_point>(clock::now());
    return [cb, last](long done, long total, const LossSums& s) {
        auto now = clock::now();
        if (done < total && now - *last < std::chrono::milliseconds(100)) return true;
        *last = now;
        py::gil_scoped_acquire gil;
        CallerFpMode caller_mode;  // the user's callbacks run in their own floating-point mode
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        if (!cb.is_none()) {
            double n = double(std::max(s.n, 1L));
            py::object r = cb(done, total, s.loss / n, s.rec / n, s.kl / n);
            if (!r.is_none() && !r.cast<bool>()) return false;
        }
        return true;
    };
}

// (layer index, layer name, array name, shape) for each array
py::list array_infos(const std::vector<ArrayInfo>& infos, const std::string& layer, int index = 0) {
    py::list out;
    for (auto& a : infos)
        out.append(py::make_tuple(index, layer, a.name, py::tuple(py::cast(a.shape))));
    return out;
}

template <typename T, typename A>
py::array_t<T> to_numpy(const std::vector<T, A>& v) {
    py::array_t<T> a(long(v.size()));
    std::copy(v.begin(), v.end(), a.mutable_data());
    return a;
}

template <typename T, typename A>
void from_numpy(std::vector<T, A>& v, const Arr<T>& a, const char* what) {
    if (a.ndim() != 1 || size_t(a.shape(0)) != v.size())
        throw ValueError(std::string(what) + " must be a flat array of " + std::to_string(v.size()) +
                         " values");
    std::copy(a.data(), a.data() + v.size(), v.begin());
}

// Wraps a Python likelihood object (see vaecpp.Likelihood) as the engine's CustomLik: each call
// takes the GIL, passes zero-copy NumPy views and checks what comes back.
template <typename T>
CustomLik<T> custom_likelihood(py::object obj, long D, long P) {
    auto view = [](const T* p, long rows, long cols) {
        return py::array_t<T>({rows, cols}, {cols * long(sizeof(T)), long(sizeof(T))}, p,
                              py::none());
    };
    auto fetch = [](py::object r, T* out, std::vector<py::ssize_t> shape, const char* method) {
        py::gil_scoped_acquire gil;
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
        fetch(obj.attr("nll")(view(x, R, D), view(p, R, P * D)), out, {R}, "nll(x, params)");
    };
    c.grad = [=](const T* x, const T* p, long R, T* out) {
        py::gil_scoped_acquire gil;
        CallerFpMode caller_mode;
        fetch(obj.attr("grad")(view(x, R, D), view(p, R, P * D)), out, {R, P * D},
              "grad(x, params)");
    };
    c.mean = [=](const T* p, long R, T* out) {
        py::gil_scoped_acquire gil;
        CallerFpMode caller_mode;
        fetch(obj.attr("mean")(view(p, R, P * D)), out, {R, D}, "mean(params)");
    };
    return c;
}

template <typename T>
py::list model_infos(const Vae<T>& v, bool states) {
    py::list out;
    auto layers = v.all_layers();
    for (size_t i = 0; i < layers.size(); ++i)
        for (auto item : array_infos(states ? layers[i]->states() : layers[i]->weights(),
                                     layers[i]->name, int(i)))
            out.append(item);
    return out;
}

// bind_vae serves both engines. `model_of` is the Vae holding configuration, layers, weight layout
// and optimizer settings (the CUDA engine keeps one on the host); `pull` / `push` copy tensors
// that live on a device to / from it around every access (no-ops for the CPU engine).
template <typename T>
Vae<T>& model_of(Vae<T>& v) { return v; }
template <typename T>
const Vae<T>& model_of(const Vae<T>& v) { return v; }
template <typename T>
void pull(Vae<T>&) {}
template <typename T>
void push(Vae<T>&) {}
template <typename T>
void attach_likelihood(Vae<T>& v, py::object lik) {
    if (v.cfg.custom_params_per_dim > 0) v.custom = custom_likelihood<T>(lik, v.D, v.P);
}
// One optimizer step on a streamed batch.
template <typename T>
LossSums train_batch(Vae<T>& v, const T* X, int B, long batch) {
    return v.train_batch(X, B, batch);
}
template <typename T>
Vae<T>* make_model(const py::dict& d, int /*device*/) {
    return new Vae<T>(vae_config(d));
}

#ifdef VAECPP_CUDA
using cuda::VaeCuda;
Vae<float>& model_of(VaeCuda& v) { return v.host; }
const Vae<float>& model_of(const VaeCuda& v) { return v.host; }
void pull(VaeCuda& v) { v.pull(); }
void push(VaeCuda& v) { v.push(); }
void attach_likelihood(VaeCuda&, py::object) {}  // VaeCuda refuses custom likelihoods itself
VaeCuda* make_model_cuda(const py::dict& d, int device) { return new VaeCuda(vae_config(d), device); }
// A one-batch epoch in order is exactly one step (the error message then says "batch 1 of 1").
LossSums train_batch(VaeCuda& v, const float* X, int B, long) {
    return v.train_epoch(X, B, B, false, 0, nullptr);
}
#endif

// V is Vae<float>, Vae<double> or VaeCuda; `make` builds one from (config, device).
template <typename V, typename Make>
void bind_vae(py::module_& m, const char* name, Make make) {
    using T = typename V::value_type;
    py::class_<V>(m, name)
        .def(py::init([make](const py::dict& d, py::object lik, int device) {
                 V* v = make(d, device);
                 attach_likelihood(*v, lik);
                 return v;
             }),
             py::arg("config"), py::arg("likelihood") = py::none(), py::arg("device") = 0)
        .def_property_readonly("num_params", &V::num_params)
        .def_property_readonly("num_state", [](const V& v) { return long(model_of(v).state.size()); })
        .def_property("beta", [](const V& v) { return model_of(v).cfg.beta; },
                      [](V& v, double b) { model_of(v).cfg.beta = b; })
        .def_property("epsilon_std", [](const V& v) { return model_of(v).cfg.epsilon_std; },
                      [](V& v, double e) { model_of(v).cfg.epsilon_std = e; })
        .def_property("threads", [](const V& v) { return model_of(v).cfg.threads; },
                      [](V& v, int t) {
                          if (t < 1) throw ValueError("threads must be >= 1");
                          model_of(v).cfg.threads = t;
                      })
        .def("layers",
             [](const V& v) {
                 py::list out;
                 for (auto* l : model_of(v).all_layers())
                     out.append(py::make_tuple(l->name, l->kind(), py::tuple(py::cast(l->out_shape)),
                                               l->num_params()));
                 return out;
             })
        .def("weight_info", [](const V& v) { return model_infos(model_of(v), false); })
        .def("state_info", [](const V& v) { return model_infos(model_of(v), true); })
        .def("get_params", [](V& v) {
            pull(v);
            return to_numpy(model_of(v).params);
        })
        .def("set_params", [](V& v, const Arr<T>& a) {
            pull(v);
            from_numpy(model_of(v).params, a, "params");
            push(v);
        })
        .def("get_state", [](const V& v) { return to_numpy(model_of(v).state); })
        .def("set_state", [](V& v, const Arr<T>& a) { from_numpy(model_of(v).state, a, "state"); })
        .def("set_optimizer",
             [](V& v, const py::dict& d) {
                 pull(v);
                 auto& opt = model_of(v).opt;
                 opt.spec = opt_spec(d);
                 opt.reset(v.num_params());
                 push(v);
             })
        .def("set_learning_rate", [](V& v, double lr) { model_of(v).opt.spec.learning_rate = lr; })
        .def_property("step", [](const V& v) { return model_of(v).opt.step; },
                      [](V& v, long s) { model_of(v).opt.step = s; })
        .def("get_optimizer_slots",
             [](V& v) {
                 pull(v);
                 auto& opt = model_of(v).opt;
                 return py::make_tuple(to_numpy(opt.m), to_numpy(opt.v));
             })
        .def("set_optimizer_slots",
             [](V& v, const Arr<T>& m, const Arr<T>& s) {
                 pull(v);
                 auto& opt = model_of(v).opt;
                 from_numpy(opt.m, m, "optimizer slot m");
                 from_numpy(opt.v, s, "optimizer slot v");
                 push(v);
             })
        .def("train_epoch",
             [](V& v, const Arr<T>& X, int batch_size, bool shuffle, long epoch, py::object cb) {
                 check_rows(X, model_of(v).D, "x");
                 if (batch_size < 1) throw ValueError("batch_size must be >= 1");
                 Progress hook = progress_hook(cb);
                 LossSums s;
                 {
                     py::gil_scoped_release nogil;
                     s = v.train_epoch(X.data(), X.shape(0), batch_size, shuffle, epoch, hook);
                 }
                 return sums_dict(s);
             })
        .def("train_batch",
             [](V& v, const Arr<T>& X, long batch) {
                 check_rows(X, model_of(v).D, "x");
                 if (X.shape(0) < 1) throw ValueError("x is an empty batch");
                 LossSums s;
                 {
                     py::gil_scoped_release nogil;
                     s = train_batch(v, X.data(), int(X.shape(0)), batch);
                 }
                 return sums_dict(s);
             },
             py::arg("x"), py::arg("batch") = 0)
        .def("evaluate",
             [](V& v, const Arr<T>& X, int batch_size, long first) {
                 check_rows(X, model_of(v).D, "x");
                 if (batch_size < 1) throw ValueError("batch_size must be >= 1");
                 if (first < 0) throw ValueError("first must be >= 0");
                 LossSums s;
                 {
                     py::gil_scoped_release nogil;
                     s = v.evaluate(X.data(), X.shape(0), batch_size, first);
                 }
                 return sums_dict(s);
             },
             py::arg("x"), py::arg("batch_size"), py::arg("first") = 0)
        .def("gradients",
             [](V& v, const Arr<T>& X, std::optional<Arr<T>> eps) {
                 const auto& mv = model_of(v);
                 check_rows(X, mv.D, "x");
                 if (eps) {
                     check_rows(*eps, mv.L, "eps");
                     if (eps->shape(0) != X.shape(0) * mv.K())
                         throw ValueError("eps must have one row per sample and importance draw");
                 }
                 py::array_t<T> g(v.num_params());
                 T* gp = g.mutable_data();
                 const T* ep = eps ? eps->data() : nullptr;
                 LossSums s;
                 {
                     py::gil_scoped_release nogil;
                     s = v.gradients(X.data(), X.shape(0), ep, gp);
                 }
                 return py::make_tuple(sums_dict(s), g);
             })
        .def("encode",
             [](V& v, const Arr<T>& X) {
                 const py::ssize_t L = model_of(v).L;
                 check_rows(X, model_of(v).D, "x");
                 py::array_t<T> mu({X.shape(0), L}), lv({X.shape(0), L});
                 T* mp = mu.mutable_data();
                 T* lp = lv.mutable_data();
                 {
                     py::gil_scoped_release nogil;
                     v.encode(X.data(), X.shape(0), mp, lp);
                 }
                 return py::make_tuple(mu, lv);
             })
        .def("decode",
             [](V& v, const Arr<T>& Z, bool raw) {
                 const auto& mv = model_of(v);
                 check_rows(Z, mv.L, "z");
                 py::array_t<T> out({Z.shape(0), py::ssize_t(raw ? mv.P * mv.D : mv.D)});
                 T* op = out.mutable_data();
                 {
                     py::gil_scoped_release nogil;
                     v.decode(Z.data(), Z.shape(0), op, raw);
                 }
                 return out;
             },
             py::arg("z"), py::arg("raw") = false)
        .def("log_likelihood", [](V& v, const Arr<T>& X, long k) {
            check_rows(X, model_of(v).D, "x");
            if (k < 1) throw ValueError("k must be >= 1");
            py::array_t<T> out(X.shape(0));
            T* op = out.mutable_data();
            {
                py::gil_scoped_release nogil;
                v.log_likelihood(X.data(), X.shape(0), k, op);
            }
            return out;
        });
}

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

LikSpec lik_spec(const py::dict& d) {
    LikSpec s;
    s.kind = lik_from_name(d["likelihood"].cast<std::string>());
    if (d.contains("output_activation")) s.loc_act = act_from_name(d["output_activation"].cast<std::string>());
    if (d.contains("log_var_clip")) s.log_var_clip = d["log_var_clip"].cast<double>();
    if (d.contains("laplace_scale")) s.laplace_scale = d["laplace_scale"].cast<double>();
    if (d.contains("reduction")) s.mean_reduction = d["reduction"].cast<std::string>() == "mean";
    return s;
}

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
    // Runs `steps` optimizer updates on p with the gradients g[k] (steps, n); returns the final p.
    m.def("optimizer_run", [](const py::dict& spec, const Arr<double>& p0, const Arr<double>& gs,
                              const std::vector<std::pair<long, long>>& ranges) {
        Optimizer<double> opt;
        opt.spec = opt_spec(spec);
        const long n = long(p0.size());
        opt.reset(n);
        std::vector<double> p(p0.data(), p0.data() + n);
        check_rows(gs, n, "grads");
        for (long k = 0; k < gs.shape(0); ++k) {
            std::vector<double> g(gs.data() + k * n, gs.data() + (k + 1) * n);
            opt.update(p.data(), g.data(), n, ranges);
        }
        return to_numpy(p);
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
              (fast ? dense_backward<T> : dense_backward_ref<T>)(
                  dinp.mutable_data(), dW.mutable_data(), db.mutable_data(), g.data(), x.data(),
                  y.data(), W.data(), B, C, OC, a, accumulate_dinp, accumulate_grads);
              return py::make_tuple(dinp, dW, db);
          },
          py::arg("x"), py::arg("W"), py::arg("b"), py::arg("dout"), py::arg("act"), py::arg("dW0"),
          py::arg("db0"), py::arg("dinp0"), py::arg("accumulate_dinp"), py::arg("fast"),
          py::arg("threads"), py::arg("accumulate_grads") = true);
    // C (+)= op(A) @ op(B) through the engine's product (fast) or Eigen (reference); C0 is the
    // starting C when accumulating.
    k.def("gemm", [](const A& a, const A& b, const A& c0, bool trans_a, bool trans_b, bool accumulate,
                     bool fast) {
        if (a.ndim() != 2 || b.ndim() != 2) throw ValueError("A and B must be matrices");
        const long M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
        const long N = trans_b ? b.shape(0) : b.shape(1);
        if ((trans_b ? b.shape(1) : b.shape(0)) != K) throw ValueError("inner dimensions differ");
        check_rows(c0, N, "C0");
        if (c0.shape(0) != M) throw ValueError("C0 must be (M, N)");
        py::array_t<T> c({M, N});
        std::copy(c0.data(), c0.data() + M * N, c.mutable_data());
        const long sai = trans_a ? 1 : a.shape(1), sak = trans_a ? a.shape(1) : 1;
        (fast ? gemm<T> : gemm_ref<T>)(M, N, K, a.data(), sai, sak, b.data(), b.shape(1), trans_b,
                                       c.mutable_data(), N, accumulate);
        return c;
    });
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
    // `steps` optimizer updates of p with the gradients gs (steps, n) through the engine's update.
    k.def("optimizer_run", [](const py::dict& spec, const A& p0, const A& gs, int threads) {
        Optimizer<T> opt;
        opt.spec = opt_spec(spec);
        const long n = long(p0.size());
        opt.reset(n);
        check_rows(gs, n, "grads");
        py::array_t<T> p(n);
        std::copy(p0.data(), p0.data() + n, p.mutable_data());
        use_threads(threads);
        for (long s = 0; s < gs.shape(0); ++s) {
            std::vector<T> g(gs.data() + s * n, gs.data() + (s + 1) * n);
            opt.update(p.mutable_data(), g.data(), n, {{0, n}});
        }
        return p;
    });
}

void bind_kernels(py::module_& m) {
    auto k = m.def_submodule("kernels", "fast kernels and their references (for tests)");
    bind_kernels_for<float>(k);
    bind_kernels_for<double>(k);
    // The paired draws Vae::fill_eps uses; equal to scale * philox_normal(...).
    k.def("normals", [](uint64_t seed, int purpose, uint64_t stream, uint64_t first, long n, double scale) {
        Philox rng{seed};
        py::array_t<double> out(n);
        rng.normals(out.mutable_data(), stream_id(Purpose(purpose), stream), first, n, scale);
        return out;
    });
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "vaecpp's C++ engine (private: use the vaecpp package)";
    py::register_exception<NonFiniteLoss>(m, "NonFiniteLoss", PyExc_FloatingPointError);
    bind_vae<Vae<float>>(m, "VaeF32", make_model<float>);
    bind_vae<Vae<double>>(m, "VaeF64", make_model<double>);
#ifdef VAECPP_CUDA
    // CudaError is a std::runtime_error: pybind11 raises it as RuntimeError with CUDA's message.
    bind_vae<VaeCuda>(m, "VaeCudaF32", make_model_cuda);
    m.def("cuda_device_count", &cuda::device_count,
          "Number of CUDA devices the driver reports (0 without a driver or device).");
#endif
    bind_harness(m);
    bind_kernels(m);
    m.def("max_threads", &max_threads);
    // The engine's vocabularies, so that Python checks and documents names from one list.
    m.attr("ACTIVATIONS") = py::tuple(py::cast(std::vector<std::string>(kActNames, kActNames + kNumActs)));
    m.attr("LIKELIHOODS") = py::tuple(py::cast(std::vector<std::string>(kLikNames, kLikNames + kNumLiks)));
    m.attr("OPTIMIZERS") = py::tuple(py::cast(std::vector<std::string>(kOptNames, kOptNames + kNumOpts)));
    m.def("likelihood_params_per_dim", [](const std::string& name, double laplace_scale) {
        LikSpec s;
        s.kind = lik_from_name(name);
        s.laplace_scale = laplace_scale;
        return s.params_per_dim();
    }, py::arg("name"), py::arg("laplace_scale") = 0.0,
       "Decoder outputs per data dimension of a built-in likelihood.");
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
    // Seconds per step of each kind of work of an MLP VAE's training step (step_profile.hpp).
    m.def("step_profile", [](int B, int D, const std::vector<int>& hidden, int latent, int threads,
                             int steps) {
        py::gil_scoped_release nogil;
        return profile_mlp_step(B, D, hidden, latent, threads, steps);
    }, py::arg("batch"), py::arg("input_dim"), py::arg("hidden"), py::arg("latent"),
       py::arg("threads") = 1, py::arg("steps") = 20);
    // Denormals flushed to zero in the engine's threads during each call (fp_mode.hpp).
    m.def("set_flush_denormal", &set_flush_denormal, py::arg("flag"));
    m.def("flush_denormal", &flush_denormal);
    m.def("flush_denormal_supported", &flush_denormal_supported);
    m.def("_test_fp_bits", &fp_mode::get, "test hook: this thread's MXCSR (x86-64)");
    m.def("_test_set_fp_bits", [](uint64_t b) { fp_mode::set(fp_mode::Bits(b)); }, "test hook");
    m.def("_test_team_fp_bits", &team_fp_bits, "test hook: each OpenMP team thread's MXCSR",
          py::arg("threads"), py::arg("scoped"), py::arg("grow"));
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
        d["gemm_kernels"] = gemm_kernels_name();  // the set picked for this CPU (gemm.hpp)
        d["gemm_blocking"] = gemm_blocking_info();  // register tile and cache blocks (gemm.hpp)
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
    // Draws of the engine's counter-based generator, so tests can reproduce the noise exactly.
    m.def("philox_normal", [](uint64_t seed, int purpose, uint64_t stream, uint64_t first, long n) {
        Philox rng{seed};
        py::array_t<double> out(n);
        double* o = out.mutable_data();
        const uint64_t sid = stream_id(Purpose(purpose), stream);
        for (long i = 0; i < n; ++i) o[i] = rng.normal(sid, first + i);
        return out;
    });
}
