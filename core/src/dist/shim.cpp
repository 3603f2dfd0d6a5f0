#include "spn/src/dist/shim.h"

#include <chrono>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace spn_dist {

struct GroupImpl {
    c10::intrusive_ptr<c10d::Store> store;
    c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
    std::chrono::milliseconds timeout;
};

Group::~Group() { delete impl; }

std::unique_ptr<Group> new_group(rust::Str host, uint16_t port, int32_t rank, int32_t world, int64_t timeout_ms) {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = rank == 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(std::string(host)));
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
    return std::unique_ptr<Group>(new Group{new GroupImpl{store, pg, timeout}});
}

void allreduce_sum(Group &g, uint8_t *tensor) {
    std::vector<at::Tensor> v{*reinterpret_cast<at::Tensor *>(tensor)};
    g.impl->pg->allreduce(v)->wait(g.impl->timeout);
}

void broadcast(Group &g, uint8_t *tensor, int32_t root) {
    std::vector<at::Tensor> v{*reinterpret_cast<at::Tensor *>(tensor)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    g.impl->pg->broadcast(v, opts)->wait(g.impl->timeout);
}

} // namespace spn_dist
