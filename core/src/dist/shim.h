// The C++ side of spn's bridge to PyTorch's distributed engine (c10d): a TCP rendezvous store and a
// Gloo process group, and the three collectives training needs.
#pragma once
#include <cstdint>
#include <memory>

#include "rust/cxx.h"

namespace spn_dist {

struct GroupImpl;

// A complete type for cxx's UniquePtr; the c10d objects live behind it, out of this header.
struct Group {
    GroupImpl *impl;
    ~Group();
};

std::unique_ptr<Group> new_group(rust::Str host, uint16_t port, int32_t rank, int32_t world, int64_t timeout_ms);
// `tensor` points to an at::Tensor (tch's tensor handle).
void allreduce_sum(Group &group, uint8_t *tensor);
void broadcast(Group &group, uint8_t *tensor, int32_t root);
} // namespace spn_dist
