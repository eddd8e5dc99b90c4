// index.json written: compact, deterministic JSON of an index (docs/FORMAT.md), and the node
// list of a tree.
#include "format/index.hpp"
#include "format/json_support.hpp"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace ckpt::format {

namespace {

using json::append_u64;
using json::append_version;

/// A chunk's runs (1.2): [[start,length],...] for zeros, [start,length,"hex"] for a value.
void append_runs(std::string& out, const std::vector<fill_run>& runs) {
  static constexpr char hex[] = "0123456789abcdef";
  out += ",[";
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const fill_run& r = runs[i];
    if (i) out += ',';
    out += '[';
    append_u64(out, r.start);
    out += ',';
    append_u64(out, r.length);
    if (r.width != 0) {
      out += ",\"";
      for (unsigned b = 0; b < r.width; ++b) {
        const auto byte = static_cast<unsigned>((r.fill >> (8 * b)) & 0xff);
        out += hex[byte >> 4];
        out += hex[byte & 15];
      }
      out += '"';
    }
    out += ']';
  }
  out += ']';
}

void append_i64(std::string& out, std::int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

/// Appends `s` as a JSON string: '"' and '\\' escaped, control characters as \n, \t, ... or
/// \u00XX; every other byte (UTF-8 included) as is.
void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default: {
        const char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
        out.append(esc, 6);
      }
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

/// Writes the subtree at ix.nodes[pos] (and moves pos past it).
void append_node(std::string& out, const index& ix, std::size_t& pos, std::uint64_t& next_leaf) {
  const tree_node& n = ix.nodes[pos++];
  switch (n.kind) {
    case tree::kind::none:
      out += "null";
      return;
    case tree::kind::leaf:
      out += "{\"leaf\":";
      append_u64(out, next_leaf++);
      out += '}';
      return;
    case tree::kind::dict:
    case tree::kind::list: {
      const bool dict = n.kind == tree::kind::dict;
      out += dict ? "{\"dict\":[" : "{\"list\":[";
      for (std::uint32_t i = 0; i < n.children; ++i) {
        if (i) out += ',';
        if (dict) {
          out += '[';
          append_json_string(out, ix.key(ix.nodes[pos]));
          out += ',';
        }
        append_node(out, ix, pos, next_leaf);
        if (dict) out += ']';
      }
      out += "]}";
      return;
    }
  }
}

void add_nodes(index& ix, const tree& t, std::string_view key) {
  tree_node n;
  n.kind = t.type();
  n.key_offset = ix.keys.size();
  n.key_size = static_cast<std::uint32_t>(key.size());
  ix.keys += key;
  if (t.is_dict() || t.is_list()) n.children = static_cast<std::uint32_t>(t.size());
  ix.nodes.push_back(n);
  if (t.is_dict()) {
    for (const auto& [k, v] : t.items())
      add_nodes(ix, v, k);
  } else if (t.is_list()) {
    for (const auto& v : t.elements())
      add_nodes(ix, v, {});
  }
}

}  // namespace

bool is_valid_utf8(std::string_view s) noexcept {
  return simdjson::validate_utf8(s.data(), s.size());
}

std::string data_file_name(std::uint32_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "data-%05u.bin", i);
  return buf;
}

std::string shared_file_name(std::uint64_t origin_xxh3, std::uint32_t n) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "-%05u.bin", n);
  return "shared-" + checksum_hex(origin_xxh3) + buf;
}

void set_structure(index& ix, const tree& t) {
  ix.nodes.clear();
  ix.keys.clear();
  add_nodes(ix, t, {});
}

tree structure(const index& ix) {
  return build_tree(
             ix, [&](std::size_t i) { return array::spec(ix.leaves[i].dtype, ix.leaves[i].shape); })
      .value();
}

std::string encode_index(const index& ix) {
  std::string out;
  std::size_t estimate = 128 + ix.files.size() * 48;
  for (const auto& le : ix.leaves) {
    estimate += 64 + 2 * le.path.size() + le.chunks.size() * 64;
    for (const auto& c : le.chunks)
      estimate += c.runs.size() * 24;
  }
  out.reserve(estimate);
  out += "{\"format\":\"ckpt-index\",";
  append_version(out);
  out += ",\"files\":[";
  for (std::size_t i = 0; i < ix.files.size(); ++i) {
    if (i) out += ',';
    out += "{\"name\":";
    append_json_string(out, ix.files[i].name);
    out += ",\"size\":";
    append_u64(out, ix.files[i].size);
    if (!ix.files[i].origin.empty()) {
      out += ",\"origin\":";
      append_json_string(out, ix.files[i].origin);
    }
    out += '}';
  }
  out += "],\"tree\":";
  std::uint64_t next_leaf = 0;
  if (ix.nodes.empty()) {
    out += "null";
  } else {
    std::size_t pos = 0;
    append_node(out, ix, pos, next_leaf);
  }
  out += ",\"leaves\":[";
  for (std::size_t i = 0; i < ix.leaves.size(); ++i) {
    const leaf_entry& le = ix.leaves[i];
    if (i) out += ',';
    out += "{\"path\":";
    append_json_string(out, le.path);
    out += ",\"dtype\":\"";
    out += dtype_name(le.dtype);
    out += "\",\"shape\":[";
    for (std::size_t d = 0; d < le.shape.size(); ++d) {
      if (d) out += ',';
      append_i64(out, le.shape[d]);
    }
    out += "],\"chunks\":[";
    for (std::size_t c = 0; c < le.chunks.size(); ++c) {
      const chunk_entry& ch = le.chunks[c];
      if (c) out += ',';
      out += '[';
      append_u64(out, ch.file);
      out += ',';
      append_u64(out, ch.offset);
      out += ',';
      append_u64(out, ch.stored_size);
      out += ',';
      append_u64(out, ch.raw_size);
      out += ",\"";
      out += codec_name(ch.codec);
      out += "\",\"";
      out += checksum_hex(ch.xxh3);
      out += '"';
      if (!ch.runs.empty()) append_runs(out, ch.runs);
      out += ']';
    }
    out += ']';
    if (!le.chunks.empty() && std::all_of(le.chunks.begin(), le.chunks.end(),
                                          [](const chunk_entry& c) { return c.hashed; })) {
      out += ",\"hashes\":[";
      for (std::size_t c = 0; c < le.chunks.size(); ++c) {
        if (c) out += ',';
        out += '"';
        out += hash128_hex(le.chunks[c].hash);
        out += '"';
      }
      out += ']';
    }
    out += '}';
  }
  out += "]}";
  return out;
}

}  // namespace ckpt::format
