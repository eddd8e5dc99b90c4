#include "workloads.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace ckpt::perf {
namespace {

struct rng {
  std::uint64_t s;
  std::uint64_t next() {
    s += 0x9e3779b97f4a7c15ULL;
    std::uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1].
  float uniform() { return (static_cast<float>(next() >> 40) + 1.0f) * (1.0f / 16777216.0f); }
};

// Fills `out` with N(0, sd) (Box-Muller), split in `threads` slices, each with its own stream:
// a thread per slice, except for fills under 4,096 values, whose slices run one after another
// (same values; the sparse workload's 13,107 rows took 26,000 threads and 1.6 s to generate).
void fill_gaussian(float* out, std::size_t n, float sd, std::uint64_t seed) {
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  auto slice = [=](unsigned t) {
    std::size_t lo = n * t / threads, hi = n * (t + 1) / threads;
    rng r{seed * 1000003 + t};
    for (std::size_t i = lo; i < hi; i += 2) {
      float u1 = r.uniform(), u2 = r.uniform();
      float rad = std::sqrt(-2.0f * std::log(u1)) * sd;
      float th = 6.2831853f * u2;
      out[i] = rad * std::cos(th);
      if (i + 1 < hi) out[i + 1] = rad * std::sin(th);
    }
  };
  if (n < (std::size_t{1} << 12)) {
    for (unsigned t = 0; t < threads; ++t)
      slice(t);
    return;
  }
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t)
    ts.emplace_back(slice, t);
  for (auto& t : ts)
    t.join();
}

array f32_leaf(ckpt::shape s, float sd, std::uint64_t seed, bool squared = false) {
  std::uint64_t bytes = byte_size(dtype::f32, s).value();
  auto b = aligned_buffer::for_array(bytes);
  float* p = reinterpret_cast<float*>(b.data());
  fill_gaussian(p, bytes / 4, sd, seed);
  if (squared) {
    for (std::size_t i = 0; i < bytes / 4; ++i)
      p[i] *= p[i];
  }
  return array::adopt(dtype::f32, std::move(s), std::move(b)).value();
}

std::uint16_t to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  std::uint32_t rounding = 0x7fff + ((u >> 16) & 1);  // round to nearest even
  return static_cast<std::uint16_t>((u + rounding) >> 16);
}

array bf16_leaf(ckpt::shape s, float sd, std::uint64_t seed) {
  array f = f32_leaf(s, sd, seed);
  std::uint64_t n = f.num_elements();
  auto b = aligned_buffer::for_array(n * 2);
  auto* dst = reinterpret_cast<std::uint16_t*>(b.data());
  auto src = f.as<float>();
  for (std::uint64_t i = 0; i < n; ++i)
    dst[i] = to_bf16(src[i]);
  return array::adopt(dtype::bf16, std::move(s), std::move(b)).value();
}

template <class Leaf>
tree model_params(Leaf&& leaf) {
  tree layers = tree::dict();
  for (int l = 0; l < 24; ++l) {
    char name[32];
    std::snprintf(name, sizeof name, "layer_%02d", l);
    layers.set(
        name, tree::dict(
                  {{"attn", tree::dict({{"wq", leaf({640, 640})},
                                        {"wk", leaf({640, 640})},
                                        {"wv", leaf({640, 640})},
                                        {"wo", leaf({640, 640})}})},
                   {"mlp", tree::dict({{"w_in", leaf({640, 2560})}, {"w_out", leaf({2560, 640})}})},
                   {"ln1", tree::dict({{"scale", leaf({640})}})},
                   {"ln2", tree::dict({{"scale", leaf({640})}})}}));
  }
  return tree::dict({{"embed", tree::dict({{"tokens", leaf({24576, 640})}})},
                     {"layers", std::move(layers)},
                     {"final_ln", tree::dict({{"scale", leaf({640})}})}});
}

}  // namespace

result<tree> make_workload(std::string_view name, std::uint64_t seed) {
  std::uint64_t k = seed;
  if (name == "dense") {
    auto p = model_params([&](ckpt::shape s) { return f32_leaf(std::move(s), 0.02f, ++k); });
    auto mu = model_params([&](ckpt::shape s) { return f32_leaf(std::move(s), 1e-3f, ++k); });
    auto nu = model_params([&](ckpt::shape s) { return f32_leaf(std::move(s), 1e-3f, ++k, true); });
    auto step = array::zeros(dtype::i64, {}).value();
    step.as_mutable<std::int64_t>()[0] = 123456;
    auto rngl = array::zeros(dtype::u32, {2}).value();
    rngl.as_mutable<std::uint32_t>()[0] = 0x12345678;
    rngl.as_mutable<std::uint32_t>()[1] = 0x9abcdef0;
    return tree::dict({{"params", std::move(p)},
                       {"opt_state", tree::dict({{"mu", std::move(mu)}, {"nu", std::move(nu)}})},
                       {"step", step},
                       {"rng", rngl}});
  }
  if (name == "bf16") {
    return model_params([&](ckpt::shape s) { return bf16_leaf(std::move(s), 0.02f, ++k); });
  }
  if (name == "sparse") {
    const std::int64_t rows = 131072, cols = 1024;
    auto t = array::zeros(dtype::f32, {rows, cols}).value();
    float* p = t.as_mutable<float>().data();
    rng r{seed};
    std::vector<float> row(cols);
    std::vector<bool> chosen(rows, false);
    std::int64_t picked = 0;
    while (picked < 13107) {
      std::int64_t i = static_cast<std::int64_t>(r.next() % rows);
      if (chosen[i]) continue;
      chosen[i] = true;
      ++picked;
      fill_gaussian(row.data(), cols, 0.02f, seed + static_cast<std::uint64_t>(i));
      std::memcpy(p + i * cols, row.data(), cols * 4);
    }
    return tree::dict({{"embeddings", tree::dict({{"table", t}})}});
  }
  if (name == "small") {
    rng r{seed};
    tree t = tree::dict();
    for (int g = 0; g < 200; ++g) {
      char gname[32];
      std::snprintf(gname, sizeof gname, "group_%03d", g);
      tree grp = tree::dict();
      for (int i = 0; i < 100; ++i) {
        char lname[32];
        std::snprintf(lname, sizeof lname, "t_%02d", i);
        std::int64_t n = 1024 + static_cast<std::int64_t>(r.next() % (16384 - 1024 + 1));
        auto b = aligned_buffer::for_array(static_cast<std::size_t>(n) * 4);
        rng lr{r.next()};
        float* p = reinterpret_cast<float*>(b.data());
        for (std::int64_t j = 0; j < n; j += 2) {
          float u1 = lr.uniform(), u2 = lr.uniform();
          float rad = std::sqrt(-2.0f * std::log(u1)) * 0.02f;
          p[j] = rad * std::cos(6.2831853f * u2);
          if (j + 1 < n) p[j + 1] = rad * std::sin(6.2831853f * u2);
        }
        grp.set(lname, array::adopt(dtype::f32, {n}, std::move(b)).value());
      }
      t.set(gname, std::move(grp));
    }
    return t;
  }
  return fail(errc::invalid_argument,
              "unknown workload \"" + std::string(name) + "\" (dense, sparse, small, bf16)");
}

aligned_buffer gaussian_f32(std::uint64_t bytes, std::uint64_t seed) {
  auto b = aligned_buffer::for_array(bytes);
  fill_gaussian(reinterpret_cast<float*>(b.data()), bytes / 4, 0.02f, seed);
  return b;
}

tree gaussian_tree(const aligned_buffer& pool, std::uint64_t total_bytes, std::uint64_t leaves) {
  const std::uint64_t elems = total_bytes / 4;
  leaves = std::clamp<std::uint64_t>(leaves, 1, elems);
  const std::uint64_t per = elems / leaves;
  tree root = tree::dict();
  tree group = tree::dict();
  std::uint64_t off = 0;
  for (std::uint64_t i = 0; i < leaves; ++i) {
    const std::uint64_t n = i + 1 == leaves ? elems - off : per;
    std::span<const std::byte> bytes(pool.data() + off * 4, n * 4);
    char name[24];
    std::snprintf(name, sizeof name, "t_%03llu", static_cast<unsigned long long>(i % 1000));
    group.set(name, array::borrow(dtype::f32, {static_cast<std::int64_t>(n)}, bytes).value());
    off += n;
    if (i % 1000 == 999 || i + 1 == leaves) {
      char gname[24];
      std::snprintf(gname, sizeof gname, "g_%03llu", static_cast<unsigned long long>(i / 1000));
      root.set(gname, std::move(group));
      group = tree::dict();
    }
  }
  return root;
}

void prefault(std::uint64_t bytes) {
  const std::size_t step = 256ull << 20;
  std::vector<aligned_buffer> held;
  for (std::uint64_t done = 0; done < bytes; done += step) {
    held.emplace_back(step);
    std::memset(held.back().data(), 1, step);
  }
}

bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  return static_cast<bool>(f);
}

namespace {
std::uint64_t status_kb(std::string_view key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) {
      std::istringstream in(line.substr(key.size()));
      std::uint64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
  }
  return 0;
}
}  // namespace

std::uint64_t peak_rss_bytes() {
  return status_kb("VmHWM:");
}

std::uint64_t rss_bytes() {
  return status_kb("VmRSS:");
}

tree destination_like(const tree& t) {
  std::vector<array> leaves;
  for (auto& fl : t.flatten()) {
    auto b = aligned_buffer::for_array(fl.array.num_bytes());
    if (b.size()) std::memset(b.data(), 0, b.size());
    leaves.push_back(array::adopt(fl.array.dtype(), fl.array.shape(), std::move(b)).value());
  }
  return unflatten(t, std::move(leaves)).value();
}

}  // namespace ckpt::perf
