// Conversions between Python objects and the engine's records, shared by the two extension
// modules: vaecpp._core (bindings/core_module.cpp) and vaecpp._testing (bindings/testing_module.cpp).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "model/model.hpp"

namespace vaecpp::py_convert {

namespace py = pybind11;

template <typename T>
using Arr = py::array_t<T, py::array::c_style>;

inline LayerConfig layer_config(const py::dict& d) {
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

// The likelihood's keys of a model configuration (or of a test's spec, where all but
// "likelihood" may be missing).
inline LikSpec lik_spec(const py::dict& d) {
    LikSpec s;
    s.kind = lik_from_name(d["likelihood"].cast<std::string>());
    if (d.contains("output_activation")) s.loc_act = act_from_name(d["output_activation"].cast<std::string>());
    if (d.contains("log_var_clip")) s.log_var_clip = d["log_var_clip"].cast<double>();
    if (d.contains("laplace_scale")) s.laplace_scale = d["laplace_scale"].cast<double>();
    if (d.contains("reduction")) s.mean_reduction = d["reduction"].cast<std::string>() == "mean";
    return s;
}

inline VaeConfig vae_config(const py::dict& d) {
    VaeConfig c;
    c.input_shape = d["input_shape"].cast<Shape>();
    c.latent_dim = d["latent_dim"].cast<int>();
    for (auto l : d["encoder"].cast<py::list>()) c.encoder.push_back(layer_config(l.cast<py::dict>()));
    for (auto l : d["decoder"].cast<py::list>()) c.decoder.push_back(layer_config(l.cast<py::dict>()));
    c.lik = lik_spec(d);
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

inline OptSpec opt_spec(const py::dict& d) {
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
    if (d.contains("use_ema")) s.use_ema = d["use_ema"].cast<bool>();
    num("ema_momentum", s.ema_momentum);
    if (d.contains("ema_overwrite_frequency") && !d["ema_overwrite_frequency"].is_none())
        s.ema_overwrite_frequency = d["ema_overwrite_frequency"].cast<long>();
    return s;
}

template <typename T>
void check_rows(const Arr<T>& a, long cols, const char* what) {
    if (a.ndim() != 2 || a.shape(1) != cols)
        throw ValueError(std::string(what) + " must have shape (n, " + std::to_string(cols) + ")");
}

// (layer index, layer name, array name, shape) for each array
inline py::list array_infos(const std::vector<ArrayInfo>& infos, const std::string& layer, int index = 0) {
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

}  // namespace vaecpp::py_convert
