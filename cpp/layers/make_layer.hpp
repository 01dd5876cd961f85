// The factory that builds any layer from its configuration record.
#pragma once

#include "layers/basic_layers.hpp"
#include "layers/batchnorm_layer.hpp"
#include "layers/conv_layers.hpp"

namespace vaecpp {

inline Shape shape_from_config(const LayerConfig& cfg) {
    Shape s;
    for (int i = 0;; ++i) {
        const std::string key = "shape" + std::to_string(i);
        if (!cfg.num.count(key)) break;
        s.push_back(cfg.need_int(key));
    }
    return s;
}

template <typename T>
LayerPtr<T> make_layer(const LayerConfig& cfg, const Shape& in) {
    LayerPtr<T> layer;
    const std::string& k = cfg.kind;
    if (k == "dense")
        layer.reset(new DenseLayer<T>(in, cfg.need_int("units"),
                                      act_from_name(cfg.get_str("activation", "linear"))));
    else if (k == "activation")
        layer.reset(new ActivationLayer<T>(in, act_from_name(cfg.get_str("activation", "linear"))));
    else if (k == "dropout")
        layer.reset(new DropoutLayer<T>(in, cfg.need("rate")));
    else if (k == "flatten")
        layer.reset(new ReshapeLayer<T>(in, {int(shape_size(in))}));
    else if (k == "reshape")
        layer.reset(new ReshapeLayer<T>(in, shape_from_config(cfg)));
    else if (k == "conv2d")
        layer.reset(new Conv2DLayer<T>(in, cfg));
    else if (k == "conv2d_transpose")
        layer.reset(new Conv2DTransposeLayer<T>(in, cfg));
    else if (k == "maxpool2d")
        layer.reset(new MaxPool2DLayer<T>(in, cfg));
    else if (k == "channels_to_blocks")
        layer.reset(new ChannelsToBlocksLayer<T>(in, cfg.need_int("groups")));
    else if (k == "batchnorm")
        layer.reset(new BatchNormLayer<T>(in, cfg.get("momentum", 0.99), cfg.get("epsilon", 1e-3)));
    else
        throw ValueError("unknown layer kind '" + k + "'");
    layer->name = cfg.get_str("name", k);
    return layer;
}

}  // namespace vaecpp
