/*
 * The engine's packet decoder (proto/hg_codec.c) against protobuf-c's, on
 * one Packet's plaintext: for the unit tests and the fuzz target.
 */

#ifndef HG_CODEC_DIFF_H
#define HG_CODEC_DIFF_H

#include <stddef.h>
#include <stdint.h>


/*
 * NULL when both accept the packet and every frame decodes to the same
 * values, or both refuse it; otherwise what differs.
 */
const char *hg_codec_diff(const uint8_t *plain, size_t len);

#endif /* HG_CODEC_DIFF_H */
