// A program outside the ckpt tree, built against an installed ckpt via find_package.
#include <ckpt/tree.hpp>

#include <cstdio>
#include <vector>

int main() {
  std::vector<float> w(12, 1.5f);
  auto leaf = ckpt::array::borrow(std::span<float>(w), {3, 4});
  if (!leaf) return 1;
  ckpt::tree t = ckpt::tree::dict({{"w", leaf.value()}});
  auto flat = t.flatten();
  std::printf("consumer: %zu leaf, %s\n", flat.size(), flat[0].array.describe().c_str());
  return flat.size() == 1 && t.num_bytes() == 48 ? 0 : 1;
}
