// ckpt/torch.hpp - libtorch (PyTorch's C++ API) tensors, modules, optimizers and the CPU
// generator as ckpt trees. Built into the separate library ckpt::torch (CMake option
// CKPT_TORCH, on when libtorch is found; `find_package(ckpt COMPONENTS torch)`), so that
// libckpt never links libtorch.
//
// Tensors become leaves without a copy: borrow_tensor is a borrowed, writable view of a
// contiguous CPU tensor (a save captures it before `staged`, so training may go on from there;
// as a restore template a load decodes straight into it), share_tensor a shared leaf that keeps
// the tensor alive (zero copy; the tensor must not change until the save completes).
//
// The state of a training job, as subtrees:
//   module_tree(m)           {"fc1": {"weight": w, "bias": b}, ...}: named parameters and
//                            buffers, dotted names as nested dicts, leaves borrowing the
//                            module's own tensors. Saved as is; as a load template it restores
//                            in place; restore_module copies a loaded subtree into the module.
//   optimizer_tree(opt, m)   {"adam": {"param_groups": [{"options": {"lr", "beta1", ...},
//                            "params": {"fc1.weight": index, ...}}, ...], "state":
//                            {"fc1.weight": {"step", "exp_avg", "exp_avg_sq"}, ...}}} for
//                            torch::optim::Adam ("adam"), AdamW ("adamw") and SGD ("sgd":
//                            "momentum_buffer"); parameters named after m's parameters.
//                            restore_optimizer rebuilds the per-parameter state and the
//                            groups' options in a freshly built optimizer over the same module:
//                            the next steps are bit-identical to the uninterrupted run's.
//   generator_state()        the default CPU generator's state (u8[N]), so that dropout and
//                            sampling resume exactly; set_generator_state puts it back.
//
// Errors: nothing here throws for bad input. Tensors that are not CPU, not strided, not
// contiguous (borrow/share; copy them with .contiguous() first), or of a dtype ckpt lacks
// (complex, quantized) are `errc::invalid_argument` / `errc::unknown_dtype`; a tree that does not
// fit the module or optimizer is `errc::not_found` / `errc::template_mismatch`; c10::Error
// thrown inside libtorch is caught and returned as `errc::invalid_argument` with its message.
//
// Threads: like libtorch's own objects, a module or optimizer is used from one thread at a time;
// a save of borrowed leaves reads the tensors until `staged`.
#pragma once

#include <ckpt/array.hpp>
#include <ckpt/buffer.hpp>
#include <ckpt/dtype.hpp>
#include <ckpt/error.hpp>
#include <ckpt/tree.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstddef>

namespace ckpt::torch {

/// bool, i8..i64, u8, f16, bf16, f32, f64; other scalar types are `errc::unknown_dtype`.
result<ckpt::dtype> to_ckpt_dtype(c10::ScalarType t);
/// The inverse; u16, u32, u64 and fp8 (no libtorch 1.13 type) are `errc::unknown_dtype`.
result<c10::ScalarType> to_scalar_type(ckpt::dtype t);

/// A borrowed, writable view of a defined, contiguous, strided CPU tensor's bytes (its storage
/// offset included). The caller keeps the tensor alive until a save holding the view is
/// `staged` (or a load filling it completes).
result<array> borrow_tensor(const at::Tensor& t);
/// A shared leaf over the tensor's bytes that keeps the tensor (a reference) alive: zero copy.
/// The tensor must not change until every save holding it completed.
result<array> share_tensor(const at::Tensor& t);
/// A CPU tensor over an array's bytes, zero copy: it keeps an owned or shared array's owner
/// alive; for a borrowed array the caller keeps the memory valid as long as the tensor lives.
/// Shared arrays are immutable: do not write through the tensor. Specs are refused.
result<at::Tensor> tensor_view(const array& a);
/// A fresh CPU tensor holding a copy of the array's bytes.
result<at::Tensor> to_tensor(const array& a);

/// The module's named parameters and buffers (recursively; undefined ones skipped) as nested
/// dicts of borrowed views (see borrow_tensor).
result<tree> module_tree(const ::torch::nn::Module& m);
/// Copies `saved` (a module_tree as loaded) into the module's own tensors, in place. Every
/// parameter and buffer must be there with its dtype and shape, and nothing else.
result<void> restore_module(::torch::nn::Module& m, const tree& saved);

/// The optimizer's groups (options, parameter names) and per-parameter state, parameters
/// named after `m`'s (every optimized parameter must be one of m's). Tensors are borrowed
/// views; step counts and options are owned scalars. Adam, AdamW and SGD; others are
/// `errc::invalid_argument`.
result<tree> optimizer_tree(const ::torch::optim::Optimizer& opt, const ::torch::nn::Module& m);
/// Replaces `opt`'s state and its groups' options with `saved` (an optimizer_tree as loaded,
/// of the same kind, the same groups of the same parameters of `m`). State tensors are copies.
result<void> restore_optimizer(::torch::optim::Optimizer& opt, const ::torch::nn::Module& m,
                               const tree& saved);

/// Allocations of at least this many bytes start on a page once use_page_aligned_tensors ran.
inline constexpr std::size_t aligned_tensor_min = aligned_buffer::page_aligned_min;
/// Installs, once for the process, a libtorch CPU allocator that puts every allocation of
/// aligned_tensor_min bytes or more on a page boundary (smaller ones keep libtorch's 64 bytes;
/// at most 4 KiB more per tensor). Call it before the model and optimizer are built. Then a
/// blocking save writes raw chunks of their tensors straight from the tensors' memory with
/// O_DIRECT, and a load into module_tree(m) reads straight into the module's tensors: neither
/// copies the tensors through a staging buffer (libtorch's default 64-byte alignment rules the
/// direct paths out). Tensors allocated before keep their memory and deleter. Not undone.
void use_page_aligned_tensors();
/// Whether a tensor's data starts on a page boundary (false for an undefined tensor).
bool is_page_aligned(const at::Tensor& t);

/// A copy of the default CPU generator's state, u8[N].
result<array> generator_state();
/// Sets the default CPU generator's state from a generator_state() leaf.
result<void> set_generator_state(const array& state);

}  // namespace ckpt::torch
