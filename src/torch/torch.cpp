// ckpt::torch: libtorch tensors, modules, optimizers and the CPU generator as ckpt trees
// (ckpt/torch.hpp). One translation unit: libtorch headers are heavy.
//
// Every public function catches c10::Error (and other exceptions of libtorch, bad_alloc
// excepted) at its boundary and returns it as a ckpt error.
#include <ckpt/torch.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <c10/util/string_utils.h>
#include <torch/nn/module.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ckpt::torch {

namespace {

/// Runs `f` (returning a result), turning exceptions of libtorch into errors.
template <class F>
auto guarded(std::string_view what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const c10::Error& e) {
    return fail(errc::invalid_argument, std::string(what) + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return fail(errc::invalid_argument, std::string(what) + ": " + e.what());
  }
}

std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  std::string s = std::string(c10::toString(t.scalar_type())) + "[";
  for (std::int64_t i = 0; i < t.dim(); ++i)
    s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "] on " + t.device().str();
}

/// The dtype and shape of a tensor a leaf may view: defined, CPU, strided, contiguous.
result<ckpt::dtype> check_viewable(const at::Tensor& t) {
  if (!t.defined()) return fail(errc::invalid_argument, "undefined tensor");
  if (!t.device().is_cpu()) {
    return fail(errc::invalid_argument, describe(t) +
                                            ": ckpt reads CPU tensors only (copy it with "
                                            ".cpu() first)");
  }
  if (t.layout() != c10::kStrided) {
    return fail(errc::invalid_argument, describe(t) + ": not a strided (dense) tensor");
  }
  CKPT_TRY_CTX(auto dt, to_ckpt_dtype(t.scalar_type()), describe(t));
  if (t.is_neg() || t.is_conj()) {
    return fail(errc::invalid_argument, describe(t) + ": a lazy negated/conjugated view");
  }
  if (!t.is_contiguous()) {
    std::string strides;
    for (std::int64_t i = 0; i < t.dim(); ++i)
      strides += (i ? ", " : "") + std::to_string(t.stride(i));
    return fail(errc::invalid_argument, describe(t) + " has non-contiguous strides [" + strides +
                                            "]: ckpt leaves are C-order; save t.contiguous()");
  }
  return dt;
}

ckpt::shape shape_of(const at::Tensor& t) {
  return ckpt::shape(t.sizes().begin(), t.sizes().end());
}

std::span<std::byte> bytes_of(const at::Tensor& t) {
  const std::size_t n = static_cast<std::size_t>(t.numel()) * t.element_size();
  return {static_cast<std::byte*>(t.data_ptr()), n == 0 ? 0 : n};
}

template <class T>
array scalar(T v) {
  auto a = array::zeros(dtype_of<T>, {}).value();
  std::memcpy(a.mutable_bytes().data(), &v, sizeof(T));
  return a;
}

/// The scalar leaf `key` of dict `d`, of C++ type T.
template <class T>
result<T> read_scalar(const tree& d, std::string_view key, std::string_view where) {
  const tree* n = d.get(key);
  if (!n || !n->is_leaf()) {
    return fail(errc::not_found, std::string(where) + ": no scalar \"" + std::string(key) + "\"");
  }
  const array& a = n->leaf();
  if (a.dtype() != dtype_of<T> || !a.shape().empty() || a.bytes().size() != sizeof(T)) {
    return fail(errc::template_mismatch, std::string(where) + "/" + std::string(key) + ": " +
                                             a.describe() + ", expected " +
                                             std::string(dtype_name(dtype_of<T>)) + "[]");
  }
  T v;
  std::memcpy(&v, a.bytes().data(), sizeof(T));
  return v;
}

std::vector<std::string> split_dotted(const std::string& name) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    auto dot = name.find('.', start);
    parts.push_back(name.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

/// Sets `leaf` at the dotted `name` in nested dicts under `root`.
result<void> set_dotted(tree& root, const std::string& name, array leaf) {
  auto parts = split_dotted(name);
  tree* node = &root;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    tree* child = node->get(parts[i]);
    if (!child) {
      child = &node->set(parts[i], tree::dict());
    } else if (!child->is_dict()) {
      return fail(errc::invalid_argument, "module tensor \"" + name + "\": \"" + parts[i] +
                                              "\" is a tensor and a submodule");
    }
    node = child;
  }
  if (node->get(parts.back())) {
    return fail(errc::invalid_argument, "module tensor \"" + name + "\" appears twice");
  }
  node->set(parts.back(), tree(std::move(leaf)));
  return success();
}

const tree* get_dotted(const tree& root, const std::string& name) {
  const tree* node = &root;
  for (const auto& part : split_dotted(name)) {
    node = node->get(part);
    if (!node) return nullptr;
  }
  return node;
}

/// Every named parameter and buffer of `m`, undefined ones skipped.
std::vector<std::pair<std::string, at::Tensor>> module_tensors(const ::torch::nn::Module& m) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : m.named_parameters(true))
    if (item.value().defined()) out.emplace_back(item.key(), item.value());
  for (const auto& item : m.named_buffers(true))
    if (item.value().defined()) out.emplace_back(item.key(), item.value());
  return out;
}

std::string state_key(const at::Tensor& p) {
  return c10::guts::to_string(p.unsafeGetTensorImpl());
}

enum class optimizer_kind { adam, adamw, sgd };

result<optimizer_kind> kind_of(const ::torch::optim::Optimizer& opt) {
  if (dynamic_cast<const ::torch::optim::Adam*>(&opt)) return optimizer_kind::adam;
  if (dynamic_cast<const ::torch::optim::AdamW*>(&opt)) return optimizer_kind::adamw;
  if (dynamic_cast<const ::torch::optim::SGD*>(&opt)) return optimizer_kind::sgd;
  return fail(errc::invalid_argument,
              "optimizer state: only torch::optim::Adam, AdamW and SGD are supported");
}

const char* kind_name(optimizer_kind k) {
  switch (k) {
    case optimizer_kind::adam:
      return "adam";
    case optimizer_kind::adamw:
      return "adamw";
    case optimizer_kind::sgd:
      return "sgd";
  }
  return "?";
}

/// Parameter names of `m` by TensorImpl.
std::unordered_map<const c10::TensorImpl*, std::string> parameter_names(
    const ::torch::nn::Module& m) {
  std::unordered_map<const c10::TensorImpl*, std::string> names;
  for (const auto& item : m.named_parameters(true))
    names.emplace(item.value().unsafeGetTensorImpl(), item.key());
  return names;
}

template <class Options>
tree adam_options_tree(const Options& o) {
  return tree::dict({{"lr", scalar(o.lr())},
                     {"beta1", scalar(std::get<0>(o.betas()))},
                     {"beta2", scalar(std::get<1>(o.betas()))},
                     {"eps", scalar(o.eps())},
                     {"weight_decay", scalar(o.weight_decay())},
                     {"amsgrad", scalar(o.amsgrad())}});
}

template <class Options>
result<void> restore_adam_options(Options& o, const tree& t, const std::string& where) {
  CKPT_TRY(auto lr, read_scalar<double>(t, "lr", where));
  CKPT_TRY(auto beta1, read_scalar<double>(t, "beta1", where));
  CKPT_TRY(auto beta2, read_scalar<double>(t, "beta2", where));
  CKPT_TRY(auto eps, read_scalar<double>(t, "eps", where));
  CKPT_TRY(auto wd, read_scalar<double>(t, "weight_decay", where));
  CKPT_TRY(auto amsgrad, read_scalar<bool>(t, "amsgrad", where));
  o.lr(lr);
  o.betas(std::make_tuple(beta1, beta2));
  o.eps(eps);
  o.weight_decay(wd);
  o.amsgrad(amsgrad);
  return success();
}

tree sgd_options_tree(const ::torch::optim::SGDOptions& o) {
  return tree::dict({{"lr", scalar(o.lr())},
                     {"momentum", scalar(o.momentum())},
                     {"dampening", scalar(o.dampening())},
                     {"weight_decay", scalar(o.weight_decay())},
                     {"nesterov", scalar(o.nesterov())}});
}

result<void> restore_sgd_options(::torch::optim::SGDOptions& o, const tree& t,
                                 const std::string& where) {
  CKPT_TRY(auto lr, read_scalar<double>(t, "lr", where));
  CKPT_TRY(auto momentum, read_scalar<double>(t, "momentum", where));
  CKPT_TRY(auto dampening, read_scalar<double>(t, "dampening", where));
  CKPT_TRY(auto wd, read_scalar<double>(t, "weight_decay", where));
  CKPT_TRY(auto nesterov, read_scalar<bool>(t, "nesterov", where));
  o.lr(lr);
  o.momentum(momentum);
  o.dampening(dampening);
  o.weight_decay(wd);
  o.nesterov(nesterov);
  return success();
}

/// A copy of the saved tensor `key` of a parameter's state, checked against the parameter.
result<at::Tensor> state_tensor(const tree& st, const char* key, const at::Tensor& param,
                                const std::string& where) {
  const tree* n = st.get(key);
  if (!n || !n->is_leaf()) {
    return fail(errc::not_found, where + ": no tensor \"" + key + "\"");
  }
  const array& a = n->leaf();
  auto want = to_ckpt_dtype(param.scalar_type());
  if (!want || a.dtype() != want.value() || a.shape() != shape_of(param)) {
    return fail(errc::template_mismatch,
                where + "/" + key + ": " + a.describe() + ", the parameter is " + describe(param));
  }
  return to_tensor(a);
}

/// The optional tensor `key`: undefined when absent.
result<at::Tensor> optional_state_tensor(const tree& st, const char* key, const at::Tensor& param,
                                         const std::string& where) {
  if (!st.get(key)) return at::Tensor();
  return state_tensor(st, key, param, where);
}

template <class State>
result<std::unique_ptr<::torch::optim::OptimizerParamState>> adam_state(const tree& st,
                                                                        const at::Tensor& p,
                                                                        const std::string& where) {
  auto s = std::make_unique<State>();
  CKPT_TRY(auto step, read_scalar<std::int64_t>(st, "step", where));
  CKPT_TRY(auto exp_avg, state_tensor(st, "exp_avg", p, where));
  CKPT_TRY(auto exp_avg_sq, state_tensor(st, "exp_avg_sq", p, where));
  CKPT_TRY(auto max_sq, optional_state_tensor(st, "max_exp_avg_sq", p, where));
  s->step(step);
  s->exp_avg(exp_avg);
  s->exp_avg_sq(exp_avg_sq);
  if (max_sq.defined()) s->max_exp_avg_sq(max_sq);
  return std::unique_ptr<::torch::optim::OptimizerParamState>(std::move(s));
}

}  // namespace

result<ckpt::dtype> to_ckpt_dtype(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Bool:
      return ckpt::dtype::bool_;
    case c10::ScalarType::Char:
      return ckpt::dtype::i8;
    case c10::ScalarType::Short:
      return ckpt::dtype::i16;
    case c10::ScalarType::Int:
      return ckpt::dtype::i32;
    case c10::ScalarType::Long:
      return ckpt::dtype::i64;
    case c10::ScalarType::Byte:
      return ckpt::dtype::u8;
    case c10::ScalarType::Half:
      return ckpt::dtype::f16;
    case c10::ScalarType::BFloat16:
      return ckpt::dtype::bf16;
    case c10::ScalarType::Float:
      return ckpt::dtype::f32;
    case c10::ScalarType::Double:
      return ckpt::dtype::f64;
    default:
      break;
  }
  return fail(errc::unknown_dtype,
              "torch scalar type " + std::string(c10::toString(t)) + " has no ckpt dtype");
}

result<c10::ScalarType> to_scalar_type(ckpt::dtype t) {
  switch (t) {
    case ckpt::dtype::bool_:
      return c10::ScalarType::Bool;
    case ckpt::dtype::i8:
      return c10::ScalarType::Char;
    case ckpt::dtype::i16:
      return c10::ScalarType::Short;
    case ckpt::dtype::i32:
      return c10::ScalarType::Int;
    case ckpt::dtype::i64:
      return c10::ScalarType::Long;
    case ckpt::dtype::u8:
      return c10::ScalarType::Byte;
    case ckpt::dtype::f16:
      return c10::ScalarType::Half;
    case ckpt::dtype::bf16:
      return c10::ScalarType::BFloat16;
    case ckpt::dtype::f32:
      return c10::ScalarType::Float;
    case ckpt::dtype::f64:
      return c10::ScalarType::Double;
    default:
      break;
  }
  return fail(errc::unknown_dtype,
              "ckpt dtype " + std::string(dtype_name(t)) + " has no libtorch scalar type");
}

result<array> borrow_tensor(const at::Tensor& t) {
  return guarded("borrow_tensor", [&]() -> result<array> {
    CKPT_TRY(auto dt, check_viewable(t));
    return array::borrow(dt, shape_of(t), bytes_of(t));
  });
}

result<array> share_tensor(const at::Tensor& t) {
  return guarded("share_tensor", [&]() -> result<array> {
    CKPT_TRY(auto dt, check_viewable(t));
    auto bytes = bytes_of(t);
    std::shared_ptr<const void> owner = std::make_shared<const at::Tensor>(t);
    return array::share(dt, shape_of(t), std::move(owner), bytes);
  });
}

result<at::Tensor> tensor_view(const array& a) {
  return guarded("tensor_view", [&]() -> result<at::Tensor> {
    if (a.is_spec()) {
      return fail(errc::invalid_argument, "tensor_view: " + a.describe() + " is a spec");
    }
    CKPT_TRY(auto st, to_scalar_type(a.dtype()));
    const auto options = at::TensorOptions().dtype(st).device(c10::kCPU);
    const std::vector<std::int64_t> sizes(a.shape().begin(), a.shape().end());
    if (a.num_bytes() == 0) return at::empty(sizes, options);
    auto owner = a.owner();
    return at::from_blob(
        const_cast<std::byte*>(a.bytes().data()), sizes, [owner](void*) mutable { owner.reset(); },
        options);
  });
}

result<at::Tensor> to_tensor(const array& a) {
  return guarded("to_tensor", [&]() -> result<at::Tensor> {
    if (a.is_spec()) {
      return fail(errc::invalid_argument, "to_tensor: " + a.describe() + " is a spec");
    }
    CKPT_TRY(auto st, to_scalar_type(a.dtype()));
    const std::vector<std::int64_t> sizes(a.shape().begin(), a.shape().end());
    at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(st).device(c10::kCPU));
    if (a.num_bytes() > 0) std::memcpy(t.data_ptr(), a.bytes().data(), a.num_bytes());
    return t;
  });
}

result<tree> module_tree(const ::torch::nn::Module& m) {
  return guarded("module_tree", [&]() -> result<tree> {
    tree root = tree::dict();
    for (const auto& [name, t] : module_tensors(m)) {
      CKPT_TRY_CTX(auto leaf, borrow_tensor(t), "module tensor \"" + name + "\"");
      CKPT_TRY(set_dotted(root, name, std::move(leaf)));
    }
    return root;
  });
}

result<void> restore_module(::torch::nn::Module& m, const tree& saved) {
  return guarded("restore_module", [&]() -> result<void> {
    const auto tensors = module_tensors(m);
    // Check everything before the first byte is written.
    std::vector<std::pair<std::span<std::byte>, const array*>> copies;
    for (const auto& [name, t] : tensors) {
      const tree* n = get_dotted(saved, name);
      if (!n || !n->is_leaf()) {
        return fail(errc::not_found,
                    "restore_module: \"" + name + "\" (" + describe(t) + ") is not in the tree");
      }
      CKPT_TRY_CTX(auto view, borrow_tensor(t), "restore_module: \"" + name + "\"");
      const array& a = n->leaf();
      if (a.dtype() != view.dtype() || a.shape() != view.shape() || a.is_spec()) {
        return fail(errc::template_mismatch, "restore_module: \"" + name + "\" is " + describe(t) +
                                                 ", the tree holds " + a.describe());
      }
      copies.emplace_back(view.mutable_bytes(), &a);
    }
    if (saved.num_leaves() != tensors.size()) {
      return fail(errc::template_mismatch,
                  "restore_module: the tree holds " + std::to_string(saved.num_leaves()) +
                      " leaves, the module " + std::to_string(tensors.size()) + " tensors");
    }
    for (const auto& [dst, a] : copies)
      if (!dst.empty()) std::memcpy(dst.data(), a->bytes().data(), dst.size());
    return success();
  });
}

result<tree> optimizer_tree(const ::torch::optim::Optimizer& opt, const ::torch::nn::Module& m) {
  return guarded("optimizer_tree", [&]() -> result<tree> {
    CKPT_TRY(auto kind, kind_of(opt));
    const auto names = parameter_names(m);
    tree groups = tree::list();
    tree state = tree::dict();
    const auto& groups_in = opt.param_groups();
    for (std::size_t g = 0; g < groups_in.size(); ++g) {
      const auto& group = groups_in[g];
      tree params = tree::dict();
      for (std::size_t i = 0; i < group.params().size(); ++i) {
        const at::Tensor& p = group.params()[i];
        auto it = names.find(p.unsafeGetTensorImpl());
        if (it == names.end()) {
          return fail(errc::invalid_argument, "optimizer_tree: parameter " + std::to_string(i) +
                                                  " of group " + std::to_string(g) + " (" +
                                                  describe(p) +
                                                  ") is not a parameter of the module");
        }
        const std::string& name = it->second;
        params.set(name, scalar(static_cast<std::int64_t>(i)));
        auto st = opt.state().find(state_key(p));
        if (st == opt.state().end()) continue;
        const std::string where = "optimizer state of \"" + name + "\"";
        tree s = tree::dict();
        if (kind == optimizer_kind::sgd) {
          const auto& ps = static_cast<const ::torch::optim::SGDParamState&>(*st->second);
          if (ps.momentum_buffer().defined()) {
            CKPT_TRY_CTX(auto buf, borrow_tensor(ps.momentum_buffer()), where);
            s.set("momentum_buffer", std::move(buf));
          }
        } else {
          auto add_adam = [&](const auto& ps) -> result<void> {
            s.set("step", scalar(static_cast<std::int64_t>(ps.step())));
            CKPT_TRY_CTX(auto m1, borrow_tensor(ps.exp_avg()), where);
            CKPT_TRY_CTX(auto m2, borrow_tensor(ps.exp_avg_sq()), where);
            s.set("exp_avg", std::move(m1));
            s.set("exp_avg_sq", std::move(m2));
            if (ps.max_exp_avg_sq().defined()) {
              CKPT_TRY_CTX(auto mx, borrow_tensor(ps.max_exp_avg_sq()), where);
              s.set("max_exp_avg_sq", std::move(mx));
            }
            return success();
          };
          if (kind == optimizer_kind::adam) {
            CKPT_TRY(add_adam(static_cast<const ::torch::optim::AdamParamState&>(*st->second)));
          } else {
            CKPT_TRY(add_adam(static_cast<const ::torch::optim::AdamWParamState&>(*st->second)));
          }
        }
        state.set(name, std::move(s));
      }
      tree options;
      switch (kind) {
        case optimizer_kind::adam:
          options =
              adam_options_tree(static_cast<const ::torch::optim::AdamOptions&>(group.options()));
          break;
        case optimizer_kind::adamw:
          options =
              adam_options_tree(static_cast<const ::torch::optim::AdamWOptions&>(group.options()));
          break;
        case optimizer_kind::sgd:
          options =
              sgd_options_tree(static_cast<const ::torch::optim::SGDOptions&>(group.options()));
          break;
      }
      groups.append(tree::dict({{"options", std::move(options)}, {"params", std::move(params)}}));
    }
    tree body = tree::dict({{"param_groups", std::move(groups)}, {"state", std::move(state)}});
    tree out = tree::dict();
    out.set(kind_name(kind), std::move(body));
    return out;
  });
}

result<void> restore_optimizer(::torch::optim::Optimizer& opt, const ::torch::nn::Module& m,
                               const tree& saved) {
  return guarded("restore_optimizer", [&]() -> result<void> {
    CKPT_TRY(auto kind, kind_of(opt));
    const std::string kname = kind_name(kind);
    const tree* body = saved.get(kname);
    if (!body || !body->is_dict()) {
      std::string have;
      for (const auto& [k, v] : saved.items())
        have += (have.empty() ? "" : ", ") + k;
      return fail(errc::template_mismatch,
                  "restore_optimizer: no \"" + kname +
                      "\" state in the tree (it holds: " + (have.empty() ? "nothing" : have) + ")");
    }
    const tree* groups = body->get("param_groups");
    const tree* state = body->get("state");
    if (!groups || !groups->is_list() || !state || !state->is_dict()) {
      return fail(errc::template_mismatch,
                  "restore_optimizer: \"" + kname + "\" lacks param_groups or state");
    }
    auto& groups_out = opt.param_groups();
    if (groups->size() != groups_out.size()) {
      return fail(errc::template_mismatch,
                  "restore_optimizer: the tree holds " + std::to_string(groups->size()) +
                      " parameter groups, the optimizer " + std::to_string(groups_out.size()));
    }
    const auto names = parameter_names(m);
    // Check every group's parameters and build the new state before changing anything.
    std::unordered_map<std::string, at::Tensor> by_name;
    for (std::size_t g = 0; g < groups_out.size(); ++g) {
      const tree& gt = groups->elements()[g];
      const tree* params = gt.get("params");
      const std::string where = "restore_optimizer: group " + std::to_string(g);
      if (!params || !params->is_dict() || !gt.get("options")) {
        return fail(errc::template_mismatch, where + " lacks params or options");
      }
      const auto& ps = groups_out[g].params();
      if (params->size() != ps.size()) {
        return fail(errc::template_mismatch, where + ": " + std::to_string(params->size()) +
                                                 " parameters saved, " + std::to_string(ps.size()) +
                                                 " in the optimizer");
      }
      for (std::size_t i = 0; i < ps.size(); ++i) {
        auto it = names.find(ps[i].unsafeGetTensorImpl());
        if (it == names.end()) {
          return fail(errc::invalid_argument, where + ": parameter " + std::to_string(i) +
                                                  " is not a parameter of the module");
        }
        if (params->items()[i].first != it->second) {
          return fail(errc::template_mismatch, where + ": parameter " + std::to_string(i) +
                                                   " is \"" + it->second + "\", saved \"" +
                                                   params->items()[i].first + "\"");
        }
        by_name.emplace(it->second, ps[i]);
      }
    }
    std::vector<std::pair<std::string, std::unique_ptr<::torch::optim::OptimizerParamState>>>
        new_state;
    for (const auto& [name, st] : state->items()) {
      auto it = by_name.find(name);
      const std::string where = "restore_optimizer: state of \"" + name + "\"";
      if (it == by_name.end()) {
        return fail(errc::template_mismatch, where + ": no such parameter in the optimizer");
      }
      if (!st.is_dict()) return fail(errc::template_mismatch, where + ": not a dict");
      const at::Tensor& p = it->second;
      std::unique_ptr<::torch::optim::OptimizerParamState> s;
      switch (kind) {
        case optimizer_kind::adam: {
          CKPT_TRY(auto a, adam_state<::torch::optim::AdamParamState>(st, p, where));
          s = std::move(a);
          break;
        }
        case optimizer_kind::adamw: {
          CKPT_TRY(auto a, adam_state<::torch::optim::AdamWParamState>(st, p, where));
          s = std::move(a);
          break;
        }
        case optimizer_kind::sgd: {
          auto sgd = std::make_unique<::torch::optim::SGDParamState>();
          CKPT_TRY(auto buf, optional_state_tensor(st, "momentum_buffer", p, where));
          if (buf.defined()) sgd->momentum_buffer(buf);
          s = std::move(sgd);
          break;
        }
      }
      new_state.emplace_back(state_key(p), std::move(s));
    }
    // Options: all read (and checked) first, then applied.
    std::vector<std::unique_ptr<::torch::optim::OptimizerOptions>> options;
    for (std::size_t g = 0; g < groups_out.size(); ++g) {
      const tree& ot = *groups->elements()[g].get("options");
      const std::string where = "restore_optimizer: group " + std::to_string(g) + " options";
      auto o = groups_out[g].options().clone();
      result<void> applied = success();
      switch (kind) {
        case optimizer_kind::adam:
          applied = restore_adam_options(static_cast<::torch::optim::AdamOptions&>(*o), ot, where);
          break;
        case optimizer_kind::adamw:
          applied = restore_adam_options(static_cast<::torch::optim::AdamWOptions&>(*o), ot, where);
          break;
        case optimizer_kind::sgd:
          applied = restore_sgd_options(static_cast<::torch::optim::SGDOptions&>(*o), ot, where);
          break;
      }
      if (!applied) return fail(std::move(applied).error());
      options.push_back(std::move(o));
    }
    // Apply.
    for (const auto& [name, p] : by_name)
      opt.state().erase(state_key(p));
    for (auto& [key, s] : new_state)
      opt.state()[key] = std::move(s);
    for (std::size_t g = 0; g < groups_out.size(); ++g)
      groups_out[g].set_options(std::move(options[g]));
    return success();
  });
}

result<array> generator_state() {
  return guarded("generator_state", [&]() -> result<array> {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    at::Tensor s;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      s = gen.get_state();
    }
    s = s.contiguous();
    CKPT_TRY(auto dt, to_ckpt_dtype(s.scalar_type()));
    CKPT_TRY(array a, array::zeros(dt, shape_of(s)));
    if (a.num_bytes() > 0) std::memcpy(a.mutable_bytes().data(), s.data_ptr(), a.num_bytes());
    return a;
  });
}

result<void> set_generator_state(const array& state) {
  return guarded("set_generator_state", [&]() -> result<void> {
    if (state.dtype() != ckpt::dtype::u8 || state.shape().size() != 1 || state.is_spec()) {
      return fail(errc::template_mismatch,
                  "set_generator_state: " + state.describe() + ", expected u8[N]");
    }
    CKPT_TRY(auto t, to_tensor(state));
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(t);
    return success();
  });
}

namespace {

// libtorch's CPU allocator with one change: allocations of aligned_tensor_min bytes or more start
// on a page. Memory comes from posix_memalign and goes back through free (raw_deleter), so
// tensors of either allocator can be freed whichever is installed.
struct page_aligned_allocator final : c10::Allocator {
  c10::DataPtr allocate(std::size_t n) const override {
    if (n == 0) return {nullptr, nullptr, &free_memory, c10::Device(c10::DeviceType::CPU)};
    // ckpt's rule for arrays (a page from aligned_tensor_min on), never below libtorch's own.
    const std::size_t align = std::max(aligned_buffer::array_alignment(n), c10::gAlignment);
    void* p = nullptr;
    if (::posix_memalign(&p, align, n) != 0) throw std::bad_alloc();
    return {p, p, &free_memory, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_memory; }
  static void free_memory(void* p) { std::free(p); }
};

}  // namespace

void use_page_aligned_tensors() {
  static page_aligned_allocator allocator;  // never destroyed before libtorch stops using it
  static std::once_flag once;
  // Priority 1: above the default allocator's registration (0), so nothing puts it back.
  std::call_once(once, [] { c10::SetCPUAllocator(&allocator, 1); });
}

bool is_page_aligned(const at::Tensor& t) {
  return t.defined() && is_aligned(t.data_ptr(), aligned_buffer::default_alignment);
}

}  // namespace ckpt::torch
