// Streams batches of vectors through the Verilated gw_core; long-lived (one process, many batches).
//
// Compile-time: N_IN, IN_BITS, N_OUT, OUT_BITS (-D). Protocol on stdin/stdout, little-endian:
//   request:  u32 magic 'GWSQ', u32 count, u32 flags (bit 0: random backpressure on out_ready),
//             then count * N_IN int64 raw input values
//   response: u32 magic 'GWSR', u32 count, u64 cycles (first input accepted to last output),
//             u64 latency (cycles from the first input's handshake to its output), u64 status
//             (0 ok, 1 stalled), then count * N_OUT int64 raw outputs (sign-extended)
// EOF on stdin ends the process.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "Vgw_core.h"
#include "verilated.h"

static const uint32_t REQUEST = 0x51535747u;   // "GWSQ"
static const uint32_t RESPONSE = 0x52535747u;  // "GWSR"

template <typename T>
static void put_bits(T& port, int lsb, int width, uint64_t value) {
    for (int b = 0; b < width; ++b) {
        const T bit = static_cast<T>((value >> b) & 1u);
        port = static_cast<T>((port & ~(static_cast<T>(1) << (lsb + b))) | (bit << (lsb + b)));
    }
}
template <std::size_t N>
static void put_bits(VlWide<N>& port, int lsb, int width, uint64_t value) {
    for (int b = 0; b < width; ++b) {
        const int at = lsb + b;
        const uint32_t mask = 1u << (at % 32);
        if ((value >> b) & 1u) port[at / 32] |= mask; else port[at / 32] &= ~mask;
    }
}
template <typename T>
static uint64_t get_bits(const T& port, int lsb, int width) {
    uint64_t value = 0;
    for (int b = 0; b < width; ++b) value |= static_cast<uint64_t>((port >> (lsb + b)) & 1u) << b;
    return value;
}
template <std::size_t N>
static uint64_t get_bits(const VlWide<N>& port, int lsb, int width) {
    uint64_t value = 0;
    for (int b = 0; b < width; ++b) {
        const int at = lsb + b;
        value |= static_cast<uint64_t>((port[at / 32] >> (at % 32)) & 1u) << b;
    }
    return value;
}

static bool read_all(void* buffer, size_t size) {
    return size == 0 || fread(buffer, 1, size, stdin) == size;
}
static void write_all(const void* buffer, size_t size) { fwrite(buffer, 1, size, stdout); }

int main(int argc, char** argv) {
    VerilatedContext context;
    context.commandArgs(argc, argv);
    Vgw_core core{&context};
    auto tick = [&]() {
        core.clk = 1;
        core.eval();
        core.clk = 0;
        core.eval();
    };
    core.clk = 0;
    core.rst = 1;
    core.in_valid = 0;
    core.out_ready = 0;
    core.eval();
    for (int i = 0; i < 4; ++i) tick();
    core.rst = 0;
    core.eval();

    uint32_t header[3];
    while (read_all(header, sizeof header)) {
        if (header[0] != REQUEST) {
            fprintf(stderr, "gw sim: bad request magic 0x%08x\n", header[0]);
            return 2;
        }
        const uint32_t count = header[1];
        const bool backpressure = header[2] & 1u;
        std::vector<int64_t> inputs(static_cast<size_t>(count) * N_IN);
        std::vector<int64_t> outputs(static_cast<size_t>(count) * N_OUT);
        if (!read_all(inputs.data(), inputs.size() * sizeof(int64_t))) {
            fprintf(stderr, "gw sim: truncated request\n");
            return 2;
        }
        uint32_t sent = 0, received = 0, lfsr = 0xACE1u;
        uint64_t cycle = 0, first_in = 0, first_out = 0, last_out = 0, status = 0;
        const uint64_t limit = 1000000ull + 100000ull * count;
        while (received < count) {
            if (cycle > limit) { status = 1; break; }
            lfsr = (lfsr >> 1) ^ (-(lfsr & 1u) & 0xB400u);
            core.out_ready = backpressure ? (lfsr & 3u) != 0 : 1;
            core.in_valid = sent < count;
            if (sent < count)
                for (int k = 0; k < N_IN; ++k)
                    put_bits(core.in_data, k * IN_BITS, IN_BITS, static_cast<uint64_t>(inputs[size_t(sent) * N_IN + k]));
            core.eval();
            const bool accepted = core.in_valid && core.in_ready;
            const bool delivered = core.out_valid && core.out_ready;
            if (delivered) {
                for (int j = 0; j < N_OUT; ++j) {
                    uint64_t raw = get_bits(core.out_data, j * OUT_BITS, OUT_BITS);
                    if (OUT_BITS < 64 && ((raw >> (OUT_BITS - 1)) & 1u)) raw |= ~0ull << OUT_BITS;
                    outputs[size_t(received) * N_OUT + j] = static_cast<int64_t>(raw);
                }
                if (received == 0) first_out = cycle;
                last_out = cycle;
                ++received;
            }
            if (accepted) {
                if (sent == 0) first_in = cycle;
                ++sent;
            }
            tick();
            ++cycle;
        }
        const uint32_t reply[2] = {RESPONSE, count};
        const uint64_t figures[3] = {count ? last_out - first_in : 0, count ? first_out - first_in : 0, status};
        write_all(reply, sizeof reply);
        write_all(figures, sizeof figures);
        write_all(outputs.data(), outputs.size() * sizeof(int64_t));
        fflush(stdout);
    }
    return 0;
}
