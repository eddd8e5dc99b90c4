// ckpt/dlpack.hpp - array leaves from DLPack tensors and back, header-only over
// <dlpack/dlpack.h> (DLPack 0.6, Debian's libdlpack-dev; newer headers work too).
//
// DLPack is the tensor interchange every framework speaks (PyTorch, JAX, TensorFlow, CuPy,
// NumPy): a `DLManagedTensor` is a `DLTensor` (data pointer, device, dtype, shape, strides) plus
// a deleter that the consumer calls once when done with it.
//
//   from_dlpack(m)        takes `m` over as a *shared* leaf: zero copy; the save that holds it
//                         writes straight from the tensor's memory, and `m`'s deleter runs
//                         exactly once, when the last array, tree or save referencing it lets go.
//                         The producer promises not to change the tensor while ckpt holds it
//                         (ownership::shared); for tensors that keep changing use
//                         borrow_dltensor (captured before `staged`).
//   borrow_dltensor(t)    a borrowed, writable view of a DLTensor (caller's lifetime): a save
//                         copies it before `staged`; as a restore template, a load fills it in
//                         place.
//   copy_from_dltensor(t) an owned copy, strided tensors included (the explicit copying form).
//   to_dlpack(a)          a DLManagedTensor over an array's bytes for a framework to adopt; it
//                         keeps the array's owner alive until its deleter runs. A *borrowed* array
//                         keeps nothing alive: the caller keeps its memory valid until the
//                         consumer calls the deleter, or exports with to_dlpack_copy instead.
//                         Shared arrays are immutable: the consumer must not write to them.
//   to_dlpack_copy(a)     the same over a fresh owned copy of the bytes (always safe).
//
// Dtypes: bool, i8..i64, u8..u64, f16, bf16, f32, f64 map both ways (lanes 1). fp8 and other
// DLPack codes (complex, opaque handles, vector lanes, odd bit widths) are `errc::unknown_dtype`.
// DLPack 0.6 has no bool code: ckpt uses kDLBool = 6 as DLPack 0.8 defines it (bits 8).
// Producers on DLPack < 0.8 export bool as kDLUInt/8 bits, which reads here as u8.
//
// Refusals (`errc::invalid_argument`, nothing taken over, the caller still owns the tensor):
// a device other than host memory (kDLCPU, kDLCUDAHost, kDLROCMHost), non-contiguous strides
// (copy_from_dltensor copies those), null data for a non-empty tensor, a negative rank or
// extent, a null pointer. Nothing here throws for bad input (only std::bad_alloc).
//
// Threads: the functions are thread-safe; the deleter of a tensor from from_dlpack runs on
// whichever thread drops the last reference (possibly a ckpt runtime thread once a save ends).
#pragma once

#include <ckpt/array.hpp>
#include <ckpt/dtype.hpp>
#include <ckpt/error.hpp>

#include <dlpack/dlpack.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace ckpt::dlpack {

/// kDLBool of DLPack >= 0.8 (absent from the 0.6 header).
inline constexpr std::uint8_t bool_code = 6;

/// The ckpt dtype of a DLPack dtype; `errc::unknown_dtype` for those ckpt lacks.
inline result<ckpt::dtype> to_ckpt_dtype(DLDataType t) {
  const auto describe = [&] {
    return "DLPack dtype (code " + std::to_string(t.code) + ", bits " + std::to_string(t.bits) +
           ", lanes " + std::to_string(t.lanes) + ")";
  };
  if (t.lanes != 1) return fail(errc::unknown_dtype, describe() + ": vector lanes unsupported");
  switch (t.code) {
    case kDLInt:
      switch (t.bits) {
        case 8:
          return ckpt::dtype::i8;
        case 16:
          return ckpt::dtype::i16;
        case 32:
          return ckpt::dtype::i32;
        case 64:
          return ckpt::dtype::i64;
      }
      break;
    case kDLUInt:
      switch (t.bits) {
        case 8:
          return ckpt::dtype::u8;
        case 16:
          return ckpt::dtype::u16;
        case 32:
          return ckpt::dtype::u32;
        case 64:
          return ckpt::dtype::u64;
      }
      break;
    case kDLFloat:
      switch (t.bits) {
        case 16:
          return ckpt::dtype::f16;
        case 32:
          return ckpt::dtype::f32;
        case 64:
          return ckpt::dtype::f64;
      }
      break;
    case kDLBfloat:
      if (t.bits == 16) return ckpt::dtype::bf16;
      break;
    case bool_code:
      if (t.bits == 8) return ckpt::dtype::bool_;
      break;
    default:
      break;
  }
  return fail(errc::unknown_dtype, describe() + " has no ckpt dtype");
}

/// The DLPack dtype of a ckpt dtype; `errc::unknown_dtype` for fp8 (no DLPack code).
inline result<DLDataType> to_dl_dtype(ckpt::dtype t) {
  const auto dl = [](std::uint8_t code, std::uint8_t bits) { return DLDataType{code, bits, 1}; };
  switch (t) {
    case ckpt::dtype::bool_:
      return dl(bool_code, 8);
    case ckpt::dtype::i8:
      return dl(kDLInt, 8);
    case ckpt::dtype::i16:
      return dl(kDLInt, 16);
    case ckpt::dtype::i32:
      return dl(kDLInt, 32);
    case ckpt::dtype::i64:
      return dl(kDLInt, 64);
    case ckpt::dtype::u8:
      return dl(kDLUInt, 8);
    case ckpt::dtype::u16:
      return dl(kDLUInt, 16);
    case ckpt::dtype::u32:
      return dl(kDLUInt, 32);
    case ckpt::dtype::u64:
      return dl(kDLUInt, 64);
    case ckpt::dtype::f16:
      return dl(kDLFloat, 16);
    case ckpt::dtype::bf16:
      return dl(kDLBfloat, 16);
    case ckpt::dtype::f32:
      return dl(kDLFloat, 32);
    case ckpt::dtype::f64:
      return dl(kDLFloat, 64);
    default:
      break;
  }
  return fail(errc::unknown_dtype,
              "ckpt dtype " + std::string(dtype_name(t)) + " has no DLPack dtype code");
}

/// True for memory the CPU reads directly: kDLCPU, and pinned host memory of CUDA and ROCm.
inline bool is_host_device(DLDevice d) noexcept {
  return d.device_type == kDLCPU || d.device_type == kDLCUDAHost || d.device_type == kDLROCMHost;
}

namespace detail {

inline std::string device_name(DLDevice d) {
  const char* name = nullptr;
  switch (d.device_type) {
    case kDLCPU:
      name = "kDLCPU";
      break;
    case kDLCUDA:
      name = "kDLCUDA";
      break;
    case kDLCUDAHost:
      name = "kDLCUDAHost";
      break;
    case kDLOpenCL:
      name = "kDLOpenCL";
      break;
    case kDLVulkan:
      name = "kDLVulkan";
      break;
    case kDLMetal:
      name = "kDLMetal";
      break;
    case kDLVPI:
      name = "kDLVPI";
      break;
    case kDLROCM:
      name = "kDLROCM";
      break;
    case kDLROCMHost:
      name = "kDLROCMHost";
      break;
    case kDLExtDev:
      name = "kDLExtDev";
      break;
    case kDLCUDAManaged:
      name = "kDLCUDAManaged";
      break;
    default:
      return "device type " + std::to_string(static_cast<int>(d.device_type)) + ":" +
             std::to_string(d.device_id);
  }
  return std::string(name) + ":" + std::to_string(d.device_id);
}

/// What a DLTensor describes, checked: dtype, shape, host memory.
struct checked_tensor {
  ckpt::dtype dtype = ckpt::dtype::u8;
  ckpt::shape shape;
  bool contiguous = true;
  std::byte* data = nullptr;  ///< data + byte_offset
};

inline result<checked_tensor> check(const DLTensor& t) {
  checked_tensor c;
  CKPT_TRY(auto dt, to_ckpt_dtype(t.dtype));
  c.dtype = dt;
  if (!is_host_device(t.device)) {
    return fail(errc::invalid_argument,
                "DLPack tensor on " + device_name(t.device) +
                    ": ckpt reads host memory only (kDLCPU, kDLCUDAHost, kDLROCMHost); copy it "
                    "to the CPU first");
  }
  if (t.ndim < 0) {
    return fail(errc::invalid_argument, "DLPack tensor of rank " + std::to_string(t.ndim));
  }
  if (t.ndim > 0 && t.shape == nullptr) {
    return fail(errc::invalid_argument,
                "DLPack tensor of rank " + std::to_string(t.ndim) + " without a shape array");
  }
  c.shape.assign(t.shape, t.shape + t.ndim);
  CKPT_TRY(std::uint64_t n, element_count(c.shape));
  if (t.strides != nullptr && n > 1) {
    std::int64_t expected = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      if (c.shape[i] != 1 && t.strides[i] != expected) c.contiguous = false;
      expected *= c.shape[i];
    }
  }
  if (n > 0 && t.data == nullptr) {
    return fail(errc::invalid_argument, "DLPack tensor " + std::string(dtype_name(c.dtype)) +
                                            shape_to_string(c.shape) + " with null data");
  }
  if (t.data != nullptr) c.data = static_cast<std::byte*>(t.data) + t.byte_offset;
  return c;
}

inline error not_contiguous(const DLTensor& t, const checked_tensor& c) {
  std::vector<std::int64_t> strides(t.strides, t.strides + t.ndim);
  return error(errc::invalid_argument,
               "DLPack tensor " + std::string(dtype_name(c.dtype)) + shape_to_string(c.shape) +
                   " has non-contiguous strides " + shape_to_string(strides) +
                   " (elements): ckpt leaves are C-order; copy it with copy_from_dltensor or make "
                   "it contiguous first");
}

/// The context of an exported tensor: the DLManagedTensor, the array that keeps the bytes
/// alive, and the shape and strides the DLTensor points at.
struct export_context {
  DLManagedTensor managed{};
  ckpt::array array;
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> strides;

  static void deleter(DLManagedTensor* self) {
    delete static_cast<export_context*>(self->manager_ctx);
  }
};

}  // namespace detail

/// A borrowed, writable view of `t`'s memory (C-order, host): the caller keeps the memory valid
/// until a save holding it is `staged` (or a load filling it completes). Usable as a restore
/// template leaf. Refusals: see the header comment.
inline result<array> borrow_dltensor(const DLTensor& t) {
  CKPT_TRY(auto c, detail::check(t));
  if (!c.contiguous) return fail(detail::not_contiguous(t, c));
  CKPT_TRY(std::uint64_t bytes, byte_size(c.dtype, c.shape));
  return array::borrow(c.dtype, std::move(c.shape),
                       std::span<std::byte>(c.data, c.data ? bytes : 0));
}

/// Takes `m` over as a shared leaf (zero copy). On success the array (and every copy of it, and
/// every tree and save holding one) owns `m`: its deleter runs exactly once, when the last of
/// them lets go. On failure nothing is taken: `m` is still the caller's to delete. The tensor
/// must not change while ckpt holds it.
inline result<array> from_dlpack(DLManagedTensor* m) {
  if (m == nullptr) return fail(errc::invalid_argument, "from_dlpack: null DLManagedTensor");
  CKPT_TRY_CTX(auto view, borrow_dltensor(m->dl_tensor), "from_dlpack");
  // Every check is done: from here the array owns `m`.
  std::shared_ptr<const void> owner(static_cast<const void*>(m), [](const void* p) {
    auto* managed = static_cast<DLManagedTensor*>(const_cast<void*>(p));
    if (managed->deleter != nullptr) managed->deleter(managed);
  });
  return array::share(view.dtype(), view.shape(), std::move(owner), view.bytes());
}

/// An owned copy of `t` (any strides, in elements, negative ones included), in C order.
/// Throws std::bad_alloc only.
inline result<array> copy_from_dltensor(const DLTensor& t) {
  CKPT_TRY(auto c, detail::check(t));
  CKPT_TRY(array out, array::zeros(c.dtype, c.shape));
  const std::size_t elem = dtype_size(c.dtype);
  auto dst = out.mutable_bytes();
  if (dst.empty()) return out;
  if (c.contiguous) {
    std::memcpy(dst.data(), c.data, dst.size());
    return out;
  }
  // Odometer over every index but the last; the last dimension is copied as one run.
  const int nd = t.ndim;
  const std::int64_t inner = c.shape[nd - 1];
  const std::int64_t inner_stride = t.strides[nd - 1];
  std::vector<std::int64_t> idx(nd, 0);
  std::byte* d = dst.data();
  const std::uint64_t rows = out.num_elements() / static_cast<std::uint64_t>(inner);
  for (std::uint64_t r = 0; r < rows; ++r) {
    std::int64_t offset = 0;
    for (int i = 0; i < nd - 1; ++i)
      offset += idx[i] * t.strides[i];
    const std::byte* s = c.data + offset * static_cast<std::int64_t>(elem);
    if (inner_stride == 1) {
      std::memcpy(d, s, static_cast<std::size_t>(inner) * elem);
      d += static_cast<std::size_t>(inner) * elem;
    } else {
      for (std::int64_t k = 0; k < inner; ++k, d += elem)
        std::memcpy(d, s + k * inner_stride * static_cast<std::int64_t>(elem), elem);
    }
    for (int i = nd - 2; i >= 0; --i) {
      if (++idx[i] < c.shape[i]) break;
      idx[i] = 0;
    }
  }
  return out;
}

/// A DLManagedTensor over `a`'s bytes (C order, explicit strides, kDLCPU) for a framework to
/// adopt; the consumer calls its deleter once. It holds a copy of `a`, so owned and shared
/// arrays stay alive until then; for a borrowed array the caller keeps the memory valid until
/// the deleter runs (or uses to_dlpack_copy). Shared arrays must not be written through it.
/// Errors: a spec array (no bytes), a dtype without a DLPack code.
inline result<DLManagedTensor*> to_dlpack(const array& a) {
  if (a.is_spec()) {
    return fail(errc::invalid_argument, "to_dlpack: " + a.describe() + " is a spec (no bytes)");
  }
  CKPT_TRY_CTX(DLDataType dt, to_dl_dtype(a.dtype()), "to_dlpack");
  auto ctx = std::make_unique<detail::export_context>();
  ctx->array = a;
  ctx->shape = a.shape();
  ctx->strides.assign(ctx->shape.size(), 1);
  for (std::size_t i = ctx->shape.size(); i-- > 1;)
    ctx->strides[i - 1] = ctx->strides[i] * ctx->shape[i];
  DLTensor& t = ctx->managed.dl_tensor;
  t.data = const_cast<std::byte*>(a.bytes().data());
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = static_cast<int>(ctx->shape.size());
  t.dtype = dt;
  t.shape = ctx->shape.data();
  t.strides = ctx->strides.data();
  t.byte_offset = 0;
  ctx->managed.manager_ctx = ctx.get();
  ctx->managed.deleter = &detail::export_context::deleter;
  return &ctx.release()->managed;
}

/// to_dlpack over a fresh owned copy of `a`'s bytes: the result depends on nothing of the
/// caller's. Throws std::bad_alloc only.
inline result<DLManagedTensor*> to_dlpack_copy(const array& a) {
  if (a.is_spec()) {
    return fail(errc::invalid_argument,
                "to_dlpack_copy: " + a.describe() + " is a spec (no bytes)");
  }
  CKPT_TRY(array copy, array::zeros(a.dtype(), a.shape()));
  if (a.num_bytes() > 0) std::memcpy(copy.mutable_bytes().data(), a.bytes().data(), a.num_bytes());
  return to_dlpack(copy);
}

}  // namespace ckpt::dlpack
