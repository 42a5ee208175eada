// SPDX-License-Identifier: GPL-2.0-only
/*
 * kbuild cannot name a multi-object module after one of its own objects (iommutest.o would be
 * both the module and a part of it), so the module's main source is compiled through this file.
 */
#include "iommutest.c"
