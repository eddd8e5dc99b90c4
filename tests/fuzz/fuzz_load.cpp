// libFuzzer target: the whole loader over a checkpoint directory written from the input.
//
// Input: flags (1 byte; bit 0: use the input's COMMIT instead of one computed to match), then
// three little-endian u16 lengths (index.json, metadata.json, COMMIT), those three texts, and
// the rest is data-00000.bin. With a computed COMMIT the checksums match, so the fuzzer reaches
// the index validation, template-free allocation, reads, checksums and decoders behind it.
//
// CKPT_FUZZ_WRITE_SEED=FILE: save a small real checkpoint, write it in this input format to FILE
// and exit (how tests/fuzz/corpus/fuzz_load/ was made).
#include "format/index.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace fs = std::filesystem;
namespace fmt = ckpt::format;

namespace {

fs::path dir;
std::shared_ptr<ckpt::runtime> rt;

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_all(const fs::path& p, std::string_view c) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(c.data(), static_cast<std::streamsize>(c.size()));
}
void put_u16(std::string& s, std::size_t v) {
  s += static_cast<char>(v & 0xff);
  s += static_cast<char>((v >> 8) & 0xff);
}

void write_seed(const char* out_file) {
  const fs::path src = dir / "seed";
  auto a = ckpt::array::zeros(ckpt::dtype::f32, {64}).value();
  auto s = a.as_mutable<float>();
  for (std::size_t i = 0; i < s.size(); ++i)
    s[i] = static_cast<float>(i % 5);
  auto b = ckpt::array::zeros(ckpt::dtype::i16, {3, 4}).value();
  ckpt::save_options so;
  so.data_files = 1;
  so.min_ratio = 1.0;
  so.runtime = rt;
  auto t = ckpt::tree::dict({{"a", a}, {"n", ckpt::tree::list({ckpt::tree(b), ckpt::tree()})}});
  if (!ckpt::save_blocking(src, t, {{"step", 3}}, so)) std::abort();
  std::string index = read_all(src / "index.json"), meta = read_all(src / "metadata.json"),
              commit = read_all(src / "COMMIT"), data = read_all(src / "data-00000.bin");
  std::string in;
  in += '\0';
  put_u16(in, index.size());
  put_u16(in, meta.size());
  put_u16(in, commit.size());
  in += index + meta + commit + data;
  write_all(out_file, in);
  fs::remove_all(src);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  dir = fs::temp_directory_path() / ("ckpt-fuzz-load-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  ckpt::runtime_options ro;
  ro.cpu_threads = 1;
  ro.staging_budget = 16 << 20;
  rt = ckpt::runtime::create(ro).value();
  if (const char* seed = std::getenv("CKPT_FUZZ_WRITE_SEED")) {
    write_seed(seed);
    std::exit(0);
  }
  std::atexit([] { fs::remove_all(dir); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 7) return 0;
  const bool own_commit = (data[0] & 1) != 0;
  std::size_t len[3];
  for (int i = 0; i < 3; ++i)
    len[i] = data[1 + 2 * i] | (static_cast<std::size_t>(data[2 + 2 * i]) << 8);
  std::size_t pos = 7;
  std::string part[3];
  for (int i = 0; i < 3; ++i) {
    const std::size_t n = std::min(len[i], size - pos);
    part[i].assign(reinterpret_cast<const char*>(data + pos), n);
    pos += n;
  }
  const std::string_view payload(reinterpret_cast<const char*>(data + pos), size - pos);
  const fs::path ck = dir / "ckpt";
  std::error_code ec;
  fs::remove_all(ck, ec);
  fs::create_directories(ck);
  write_all(ck / "index.json", part[0]);
  write_all(ck / "metadata.json", part[1]);
  write_all(ck / "data-00000.bin", payload);
  if (own_commit) {
    write_all(ck / "COMMIT", part[2]);
  } else {
    fmt::commit_marker cm;
    cm.index_bytes = part[0].size();
    cm.index_xxh3 = fmt::checksum(std::as_bytes(std::span(part[0])));
    cm.metadata_bytes = part[1].size();
    cm.metadata_xxh3 = fmt::checksum(std::as_bytes(std::span(part[1])));
    cm.stored_bytes = payload.size();
    write_all(ck / "COMMIT", fmt::encode_commit(cm));
  }
  ckpt::load_options lo;
  lo.runtime = rt;
  auto r = ckpt::load_blocking(ck, nullptr, lo);
  if (r && r.value().tree.flatten().empty() && part[0].find("\"leaf\"") != std::string::npos) {
    // (a loaded tree is fine; nothing else to check without a reference)
  }
  return 0;
}
