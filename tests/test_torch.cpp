// ckpt/torch.hpp with real libtorch: tensors of every mapped dtype through save/load, a module
// and its Adam/AdamW/SGD optimizer (and the CPU generator) restored into fresh objects continue
// bit-identically, refusals of strided and non-CPU tensors. Program ckpt-torch-tests, label
// torch.
#include "support.hpp"

#include <ckpt/dlpack.hpp>
#include <ckpt/load.hpp>
#include <ckpt/save.hpp>
#include <ckpt/torch.hpp>

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

using ckpt::errc;
using ckpt::tree;
namespace ct = ckpt::torch;

namespace {

/// Linear -> LayerNorm -> GELU -> Dropout -> Linear, with a buffer of its own.
struct net_impl : torch::nn::Module {
  net_impl() {
    fc1 = register_module("fc1", torch::nn::Linear(16, 32));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({32})));
    drop = register_module("drop", torch::nn::Dropout(0.2));
    fc2 = register_module("fc2", torch::nn::Linear(32, 4));
    seen = register_buffer("seen", torch::zeros({1}, torch::kLong));
  }
  torch::Tensor forward(torch::Tensor x) {
    seen += 1;
    return fc2(drop(torch::gelu(norm(fc1(x)))));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Dropout drop{nullptr};
  torch::Tensor seen;
};
TORCH_MODULE_IMPL(net, net_impl);

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& kind, net& m) {
  if (kind == "adam") {
    return std::make_unique<torch::optim::Adam>(m->parameters(),
                                                torch::optim::AdamOptions(1e-2).amsgrad(true));
  }
  if (kind == "adamw") {
    return std::make_unique<torch::optim::AdamW>(m->parameters(), torch::optim::AdamWOptions(1e-2));
  }
  return std::make_unique<torch::optim::SGD>(
      m->parameters(), torch::optim::SGDOptions(1e-2).momentum(0.9).nesterov(true));
}

/// One training step on a batch drawn from the default generator.
void train_step(net& m, torch::optim::Optimizer& opt) {
  auto x = torch::randn({8, 16});
  auto y = torch::randn({8, 4});
  opt.zero_grad();
  auto loss = torch::mse_loss(m->forward(x), y);
  loss.backward();
  opt.step();
}

bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() &&
         std::memcmp(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) == 0;
}

bool same_module(net& a, net& b) {
  auto pa = a->named_parameters(), pb = b->named_parameters();
  auto ba = a->named_buffers(), bb = b->named_buffers();
  if (pa.size() != pb.size() || ba.size() != bb.size()) return false;
  for (const auto& item : pa)
    if (!same_bits(item.value(), pb[item.key()])) return false;
  for (const auto& item : ba)
    if (!same_bits(item.value(), bb[item.key()])) return false;
  return true;
}

}  // namespace

TEST_CASE("tensors of every mapped dtype round-trip through save and load", "[torch]") {
  ckpt::test::temp_dir dir;
  torch::manual_seed(1);
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"bool", torch::rand({5, 3}) > 0.5},
      {"i8", torch::randint(-100, 100, {5, 3}, torch::kChar)},
      {"i16", torch::randint(-1000, 1000, {5, 3}, torch::kShort)},
      {"i32", torch::randint(-100000, 100000, {5, 3}, torch::kInt)},
      {"i64", torch::randint(-100000, 100000, {5, 3}, torch::kLong)},
      {"u8", torch::randint(0, 255, {5, 3}, torch::kByte)},
      {"f16", torch::randn({5, 3}).to(torch::kHalf)},
      {"bf16", torch::randn({5, 3}).to(torch::kBFloat16)},
      {"f32", torch::randn({5, 3})},
      {"f64", torch::randn({5, 3}, torch::kDouble)},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::zeros({0, 3})},
      {"offset", torch::arange(20, torch::kFloat).slice(0, 4, 12)},  // storage offset 4
  };
  tree t = tree::dict();
  for (const auto& [name, x] : tensors) {
    INFO(name);
    auto leaf = ct::borrow_tensor(x);
    REQUIRE(leaf);
    CHECK(leaf.value().ownership() == ckpt::ownership::borrowed);
    t.set(name, leaf.value());
  }
  // Shared leaves keep their tensor alive.
  auto shared = ct::share_tensor(torch::randn({64}));
  REQUIRE(shared);
  auto shared_copy = ct::to_tensor(shared.value()).value();
  t.set("shared", shared.value());
  REQUIRE(ckpt::save_blocking(dir / "ck", t, {}));

  auto loaded = ckpt::load_blocking(dir / "ck");
  REQUIRE(loaded);
  for (const auto& [name, x] : tensors) {
    INFO(name);
    const auto& a = loaded.value().tree.get(name)->leaf();
    CHECK(a.dtype() == ct::to_ckpt_dtype(x.scalar_type()).value());
    auto copy = ct::to_tensor(a);
    REQUIRE(copy);
    CHECK(same_bits(copy.value(), x.contiguous()));
    auto view = ct::tensor_view(a);
    REQUIRE(view);
    CHECK(view.value().data_ptr() == static_cast<const void*>(a.bytes().data()));
    CHECK(same_bits(view.value(), x.contiguous()));
  }
  CHECK(same_bits(ct::to_tensor(loaded.value().tree.get("shared")->leaf()).value(), shared_copy));

  // A view keeps a loaded (owned) array alive after the tree is gone.
  auto v = ct::tensor_view(loaded.value().tree.get("f32")->leaf()).value();
  loaded = ckpt::result<ckpt::loaded_checkpoint>(ckpt::fail(errc::aborted, "dropped"));
  CHECK(same_bits(v, tensors[8].second));

  // The dtype mapping, both ways.
  for (auto d : ckpt::all_dtypes) {
    auto st = ct::to_scalar_type(d);
    if (!st) {
      CHECK(st.error() == errc::unknown_dtype);
      continue;
    }
    CHECK(ct::to_ckpt_dtype(st.value()).value() == d);
  }
  CHECK(ct::to_ckpt_dtype(torch::kComplexFloat).error() == errc::unknown_dtype);
  CHECK(ct::borrow_tensor(torch::zeros({2}, torch::kComplexFloat)).error() == errc::unknown_dtype);
}

TEST_CASE("a module and its optimizer restored into fresh objects continue bit-identically",
          "[torch]") {
  const std::string kind = GENERATE("adam", "adamw", "sgd");
  INFO(kind);
  torch::set_num_threads(1);
  ckpt::test::temp_dir dir;
  torch::manual_seed(42);
  net a;
  auto opt_a = make_optimizer(kind, a);
  a->train();
  for (int i = 0; i < 3; ++i)
    train_step(a, *opt_a);

  auto mt = ct::module_tree(*a);
  REQUIRE(mt);
  CHECK(mt.value().get("fc1")->get("weight")->leaf().shape() == ckpt::shape{32, 16});
  CHECK(mt.value().get("seen")->leaf().dtype() == ckpt::dtype::i64);
  auto ot = ct::optimizer_tree(*opt_a, *a);
  REQUIRE(ot);
  REQUIRE(ot.value().get(kind));
  if (kind != "sgd") {
    const tree* st = ot.value().get(kind)->get("state")->get("fc1.weight");
    REQUIRE(st);
    CHECK(st->get("step")->leaf().as<std::int64_t>()[0] == 3);
    CHECK((st->get("max_exp_avg_sq") != nullptr) == (kind == "adam"));
  } else {
    CHECK(ot.value().get(kind)->get("state")->get("fc2.bias")->get("momentum_buffer"));
  }
  auto gen = ct::generator_state();
  REQUIRE(gen);
  tree state = tree::dict({{"model", mt.value()}, {"optim", ot.value()}, {"rng", gen.value()}});
  REQUIRE(ckpt::save_blocking(dir / "ck", state, {}));

  // The uninterrupted run goes on for three more steps.
  for (int i = 0; i < 3; ++i)
    train_step(a, *opt_a);

  // A fresh process would build fresh objects from another seed, then restore.
  torch::manual_seed(7);
  net b;
  auto opt_b = make_optimizer(kind, b);
  b->train();
  CHECK_FALSE(same_module(a, b));
  auto loaded = ckpt::load_blocking(dir / "ck");
  REQUIRE(loaded);
  const tree& lt = loaded.value().tree;
  REQUIRE(ct::restore_module(*b, *lt.get("model")));
  REQUIRE(ct::restore_optimizer(*opt_b, *b, *lt.get("optim")));
  REQUIRE(ct::set_generator_state(lt.get("rng")->leaf()));
  for (int i = 0; i < 3; ++i)
    train_step(b, *opt_b);
  CHECK(same_module(a, b));

  // The module tree is also a load template that restores in place.
  torch::manual_seed(9);
  net c;
  auto templ = tree::dict({{"model", ct::module_tree(*c).value()}});
  ckpt::load_options partial;
  partial.partial = true;
  const void* w = c->fc1->weight.data_ptr();
  REQUIRE(ckpt::load_blocking(dir / "ck", &templ, partial));
  CHECK(c->fc1->weight.data_ptr() == w);
  CHECK(same_bits(c->fc1->weight,
                  ct::to_tensor(lt.get("model")->get("fc1")->get("weight")->leaf()).value()));
}

TEST_CASE("restores refuse trees that do not fit", "[torch]") {
  torch::manual_seed(3);
  net a;
  torch::optim::Adam adam(a->parameters(), torch::optim::AdamOptions(1e-3));
  train_step(a, adam);
  auto mt = ct::module_tree(*a).value();
  auto ot = ct::optimizer_tree(adam, *a).value();

  torch::optim::SGD sgd(a->parameters(), torch::optim::SGDOptions(0.1));
  auto wrong_kind = ct::restore_optimizer(sgd, *a, ot);
  REQUIRE_FALSE(wrong_kind);
  CHECK(wrong_kind.error() == errc::template_mismatch);
  CHECK_THAT(wrong_kind.error().message(), Catch::Contains("no \"sgd\" state"));

  torch::nn::Linear other(16, 32);
  auto missing = ct::restore_module(*other, mt);  // "weight" is not at the top
  REQUIRE_FALSE(missing);
  CHECK(missing.error() == errc::not_found);
  auto fc1 = ct::restore_module(*a->fc1, *mt.get("fc1"));
  CHECK(fc1);
  auto wrong_shape = ct::restore_module(*other, *mt.get("fc2"));
  REQUIRE_FALSE(wrong_shape);
  CHECK(wrong_shape.error() == errc::template_mismatch);

  // An optimizer over tensors that are not the module's parameters.
  auto stray = torch::zeros({3}, torch::requires_grad());
  torch::optim::Adam alien(std::vector<torch::Tensor>{stray});
  CHECK(ct::optimizer_tree(alien, *a).error() == errc::invalid_argument);

  // A generator state of the wrong size: libtorch's c10::Error comes back as an error.
  auto bad = ckpt::array::zeros(ckpt::dtype::u8, {7}).value();
  auto g = ct::set_generator_state(bad);
  REQUIRE_FALSE(g);
  CHECK(g.error() == errc::invalid_argument);
  CHECK(ct::set_generator_state(ckpt::array::zeros(ckpt::dtype::f32, {7}).value()).error() ==
        errc::template_mismatch);
}

TEST_CASE("strided and non-CPU tensors are refused", "[torch]") {
  auto x = torch::randn({4, 6});
  auto tr = x.t();
  auto b = ct::borrow_tensor(tr);
  REQUIRE_FALSE(b);
  CHECK(b.error() == errc::invalid_argument);
  CHECK_THAT(b.error().message(), Catch::Contains("non-contiguous strides [1, 6]"));
  CHECK_FALSE(ct::share_tensor(tr));
  CHECK(ct::borrow_tensor(tr.contiguous()));
  CHECK_FALSE(ct::borrow_tensor(x.slice(1, 0, 3)));  // a column slice
  CHECK_FALSE(ct::borrow_tensor(torch::Tensor()));

  // A module with a strided buffer cannot be borrowed either.
  torch::nn::Linear lin(3, 5);
  lin->register_buffer("tbuf", torch::randn({3, 4}).t());
  auto mt = ct::module_tree(*lin);
  REQUIRE_FALSE(mt);
  CHECK_THAT(mt.error().message(), Catch::Contains("module tensor \"tbuf\""));

  // Non-CPU: this build of libtorch has no CUDA, but the meta device (shapes, no memory) is a
  // real non-CPU device.
  auto meta = torch::empty({4, 4}, torch::TensorOptions().device(torch::kMeta));
  auto m = ct::borrow_tensor(meta);
  REQUIRE_FALSE(m);
  CHECK(m.error() == errc::invalid_argument);
  CHECK_THAT(m.error().message(), Catch::Contains("meta"));
  CHECK_FALSE(ct::share_tensor(meta));
  // A CUDA tensor cannot be made here: asking libtorch for one throws c10::Error, which the
  // DLPack path's claim of a kDLCUDA device stands in for.
  if (!torch::cuda::is_available()) {
    DLManagedTensor fake{};
    std::int64_t shape[1] = {4};
    float data[4] = {};
    fake.dl_tensor = DLTensor{data, {kDLCUDA, 0}, 1, {kDLFloat, 32, 1}, shape, nullptr, 0};
    auto d = ckpt::dlpack::from_dlpack(&fake);
    REQUIRE_FALSE(d);
    CHECK_THAT(d.error().message(), Catch::Contains("kDLCUDA:0"));
  } else {
    auto cuda = torch::zeros({4}, torch::TensorOptions().device(torch::kCUDA));
    CHECK(ct::borrow_tensor(cuda).error() == errc::invalid_argument);
  }
}

// Process-wide and not undone: when the whole program runs, the tests after this one allocate
// page-aligned tensors too (ctest runs each test case in a process of its own).
TEST_CASE("page-aligned tensors are written and read without staging copies", "[torch]") {
  ckpt::test::temp_dir dir;
  torch::manual_seed(3);
  // Random bytes: raw chunks (nothing to compress), the only ones the direct paths take.
  auto before = torch::randint(0, 256, {300000}, torch::kByte);  // libtorch's own allocator
  ct::use_page_aligned_tensors();
  ct::use_page_aligned_tensors();  // once per process; again changes nothing
  auto big = torch::randint(0, 256, {(1 << 20) + 100}, torch::kByte);  // a partial last page
  auto small = torch::randint(0, 256, {1000}, torch::kByte);
  torch::nn::Linear lin(512, 256);
  CHECK(ct::is_page_aligned(big));
  CHECK(ct::is_page_aligned(lin->weight));  // 512 KiB, built after
  CHECK(reinterpret_cast<std::uintptr_t>(small.data_ptr()) % 64 == 0);
  CHECK_FALSE(ct::is_page_aligned(torch::Tensor()));
  CHECK(torch::empty({0}).numel() == 0);  // a zero-byte allocation

  tree t = tree::dict({{"before", ct::borrow_tensor(before).value()},
                       {"big", ct::borrow_tensor(big).value()},
                       {"small", ct::borrow_tensor(small).value()}});
  auto s = ckpt::save_blocking(dir / "ck", t, {});
  REQUIRE(s);
  auto pages = [](const torch::Tensor& x) { return x.nbytes() / 4096 * 4096; };
  // The whole pages of each page-aligned tensor went to the disk from its own memory.
  CHECK(s.value().direct_bytes == pages(big) + (ct::is_page_aligned(before) ? pages(before) : 0));

  // A load into views of page-aligned tensors fills them in place (read straight into them).
  auto big2 = torch::zeros_like(big);
  auto before2 = torch::zeros_like(before);
  auto small2 = torch::zeros_like(small);
  REQUIRE(ct::is_page_aligned(big2));
  tree templ = tree::dict({{"before", ct::borrow_tensor(before2).value()},
                           {"big", ct::borrow_tensor(big2).value()},
                           {"small", ct::borrow_tensor(small2).value()}});
  auto l = ckpt::load_blocking(dir / "ck", &templ);
  REQUIRE(l);
  CHECK(l.value().tree.get("big")->leaf().bytes().data() == big2.data_ptr());
  CHECK(same_bits(big2, big));
  CHECK(same_bits(before2, before));
  CHECK(same_bits(small2, small));
  before = torch::Tensor();  // freed by libtorch's deleter, with the new allocator installed
}
