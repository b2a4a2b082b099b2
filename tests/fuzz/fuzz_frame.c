/* libFuzzer harness for the tunnel frame decoder. Besides not crashing, every
 * frame the decoder accepts must re-encode to exactly the bytes it came from:
 * the format has one encoding per frame. */
#include <stdlib.h>

#include "proto/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t out[EM_FRAME_HEADER_LEN + EM_FRAME_MAX_DATA];
	struct em_frame f;
	size_t off = 0;

	while (off < size) {
		int n = em_frame_decode(data + off, size - off, 65536, &f);
		if (n == EM_PARTIAL || n == EM_EBADMSG)
			return 0;
		if (n < EM_FRAME_HEADER_LEN || (size_t)n > size - off)
			abort();
		int m = em_frame_encode(&f, out, sizeof(out));
		if (m != n || memcmp(out, data + off, (size_t)n) != 0)
			abort();
		off += (size_t)n;
	}
	return 0;
}
