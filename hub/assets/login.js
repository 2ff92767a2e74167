if (location.search.includes("failed")) document.getElementById("failed").hidden = false;
