/* Whole, bounded file reads. */
#include "store/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *em_file_read(int dirfd, const char *name, size_t max, bool nofollow, struct stat *sb,
                   size_t *len, int *rc, char *why, size_t whylen)
{
	struct stat st;
	char *text = NULL;
	size_t got = 0;
	int fd = openat(dirfd, name,
	                O_RDONLY | O_CLOEXEC | O_NONBLOCK | (nofollow ? O_NOFOLLOW : 0));
	if (fd == -1 || fstat(fd, &st) == -1) {
		*rc = -errno;
		snprintf(why, whylen, "cannot open: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
		*rc = -EINVAL;
		snprintf(why, whylen, "expected a regular file of at most %zu bytes", max);
		goto out;
	}
	if (!(text = malloc((size_t)st.st_size + 1))) {
		*rc = -ENOMEM;
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, text + got, (size_t)st.st_size - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			*rc = -errno;
			snprintf(why, whylen, "cannot read: %s", strerror(errno));
			free(text);
			text = NULL;
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	text[got] = 0;
	*len = got;
	if (sb)
		*sb = st;
out:
	if (fd != -1)
		close(fd);
	return text;
}
