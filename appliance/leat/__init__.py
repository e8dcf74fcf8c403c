"""The Leat API: the httpx client, the sandbox server and Loyalty Token URLs."""
